"""contrastive.GradCache: the cached step's gradients equal the plain full-batch step's.

The reference is the plain step: every encoder output of the whole batch held in one graph,
the loss, one backward. With dropout (p = 0.3) the reference applies the encoder chunk by
chunk in the cached step's order from the same seed, so it draws the same masks, and uses
the same per-chunk BatchNorm batch statistics; without dropout or BatchNorm it is one call
on the whole batch. float64, every parameter to 1e-10.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

import contrastive as C
import contrastive.distributed as cd
from contrastive import GradCache

TOL = 1e-10
B = 10


class MLP(nn.Module):
    """Linear, [BatchNorm], tanh, dropout, linear: a float64 encoder with every pitfall."""

    def __init__(self, d_in=6, d_out=4, p=0.3, bn=False, seed=0, momentum=0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(d_in, 16),
            nn.BatchNorm1d(16, momentum=momentum) if bn else nn.Identity(),
            nn.Tanh(),
            nn.Dropout(p),
            nn.Linear(16, d_out),
        ).double()

    def forward(self, x):
        return self.net(x)


class TokenEncoder(nn.Module):
    """Tokenised text as a dict {"ids": (n, L) long, "mask": (n, L) bool}: masked mean of embeddings."""

    def __init__(self, vocab=20, d=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, 8, dtype=torch.float64)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(8, d, dtype=torch.float64)

    def forward(self, batch):
        m = batch["mask"].unsqueeze(-1).double()  # (n, L, 1)
        h = (self.drop(self.emb(batch["ids"])) * m).sum(1) / m.sum(1)  # (n, 8)
        return self.out(h)


def _split(x, size):
    """ceil(n / size) chunks whose sizes differ by at most one (GradCache's split)."""
    if isinstance(x, torch.Tensor):
        return list(x.tensor_split(-(-len(x) // size)))
    parts = {k: v.tensor_split(-(-len(v) // size)) for k, v in x.items()}
    return [{k: parts[k][c] for k in x} for c in range(len(next(iter(parts.values()))))]


def _cat(outs):
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return type(outs[0])(torch.cat(o) for o in zip(*outs))


def reference_step(encoders, towers, inputs, chunk_sizes, loss_fn, seed):
    """The plain step, the encoder applied per chunk in the cached step's order: one graph."""
    torch.manual_seed(seed)
    embeddings = [_cat([encoders[t](c) for c in _split(x, chunk_sizes[t])]) for x, t in zip(inputs, towers)]
    loss = loss_fn(*embeddings)
    loss.backward()
    return loss.detach()


def cached_step(encoders, inputs, chunk_size, loss_fn, seed, **kw):
    torch.manual_seed(seed)
    return GradCache(encoders if len(encoders) > 1 else encoders[0], chunk_size, **kw).step(loss_fn, *inputs)


def _err(a, b):
    """max |a - b| relative to max(1, max |b|)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def assert_same_grads(mods_a, mods_b, tol=TOL):
    for ma, mb in zip(mods_a, mods_b):
        for (name, p), q in zip(ma.named_parameters(), mb.parameters()):
            assert p.grad is not None and q.grad is not None, name
            assert _err(p.grad, q.grad) <= tol, (name, _err(p.grad, q.grad))


def _data(seed=1, n=B, d=6):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x1, x1 + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)


Y = (torch.arange(B) % 3 == 0).double()  # contrastive_loss labels
TAU = 0.3

LABELS = torch.arange(2 * B) % 4  # supcon_loss labels of the two views stacked
K = 2  # hard negatives per query (retrieval_loss)
XN = torch.randn(B * K, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
ONE, SIAMESE, TWO = (0, 0), (0, 0), (0, 1)

# (name, encoder of each input, inputs builder, loss): each loss of the library and a user's
LOSSES = [
    ("info_nce", ONE, lambda x1, x2: (x1, x2), lambda z1, z2: C.info_nce(z1, z2, TAU)),
    ("info_nce_two_towers", TWO, lambda x1, x2: (x1, x2), lambda z1, z2: C.info_nce(z1, z2, TAU)),
    (
        "info_nce_sum_x2",
        ONE,
        lambda x1, x2: (x1, x2),
        lambda z1, z2: 2 * C.info_nce(z1, z2, TAU, reduction="sum"),
    ),
    (
        "info_nce_keep_self",
        ONE,
        lambda x1, x2: (x1, x2),
        lambda z1, z2: C.info_nce(z1, z2, TAU, exclude_self=False),
    ),
    ("nt_xent_one_input", (0,), lambda x1, x2: (torch.cat([x1, x2]),), lambda z: C.nt_xent(z, TAU)),
    ("clip_loss", TWO, lambda x1, x2: (x1, x2), lambda a, b: C.clip_loss(a, b, 0.1)),
    ("clip_loss_one_tower", ONE, lambda x1, x2: (x1, x2), lambda a, b: C.clip_loss(a, b, 0.1)),
    (
        "contrastive_loss",
        SIAMESE,
        lambda x1, x2: (x1, x2),
        lambda u, v: C.contrastive_loss(u, v, Y, margin=1.0),
    ),
    ("contrastive_loss_two_towers", TWO, lambda x1, x2: (x1, x2), lambda u, v: C.contrastive_loss(u, v, Y)),
    ("InfoNCELoss_module", ONE, lambda x1, x2: (x1, x2), C.InfoNCELoss(TAU)),
    ("user_loss", TWO, lambda x1, x2: (x1, x2), lambda a, b: ((a - b) ** 2).sum() + (a * b).tanh().mean()),
    ("supcon_loss", (0,), lambda x1, x2: (torch.cat([x1, x2]),), lambda z: C.supcon_loss(z, LABELS, 0.1)),
    (
        "retrieval_loss_hard_negatives",
        (0, 1, 1),
        lambda x1, x2: (x1, x2, XN),
        lambda a, p, n: C.retrieval_loss(a, p, n.reshape(B, K, -1), 0.05),
    ),
    (
        "retrieval_loss_symmetric_shared",
        (0, 0, 0),
        lambda x1, x2: (x1, x2, XN),
        lambda a, p, n: C.retrieval_loss(
            a, p, n, 0.05, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        ),
    ),
    ("siglip_loss", TWO, lambda x1, x2: (x1, x2), lambda a, b: C.siglip_loss(a, b, 0.1, -10.0)),
    (
        "info_nce_decoupled",
        ONE,
        lambda x1, x2: (x1, x2),
        lambda z1, z2: C.info_nce(z1, z2, TAU, decoupled=True),
    ),
]


@pytest.mark.parametrize("name, towers, make_inputs, loss_fn", LOSSES, ids=[c[0] for c in LOSSES])
@pytest.mark.parametrize("chunk", [5, 3, 4, (3, 4)], ids=["divides", "3-3-2-2", "4-3-3", "per-tower"])
def test_cached_step_equals_full_batch_step(name, towers, make_inputs, loss_fn, chunk):
    n_enc = max(towers) + 1
    sizes = list(chunk[:n_enc]) if isinstance(chunk, tuple) else [chunk] * n_enc
    encs = [MLP(seed=s, bn=True) for s in range(n_enc)]
    refs = copy.deepcopy(encs)
    inputs = make_inputs(*_data())
    want = reference_step(refs, towers, inputs, sizes, loss_fn, seed=7)
    torch.manual_seed(7)
    got = GradCache(encs, sizes).step(loss_fn, *inputs, towers=towers)
    assert not got.requires_grad and _err(got, want) <= TOL
    assert_same_grads(encs, refs)
    after = torch.rand(3)  # the generator ends where the plain step leaves it
    reference_step(copy.deepcopy(refs), towers, inputs, sizes, loss_fn, seed=7)
    assert torch.equal(after, torch.rand(3))


def test_dropout_masks_are_replayed_not_redrawn():
    """The check above can fail: another draw of the masks changes the gradient by far more
    than 1e-10, so equal gradients mean the second forward replayed the first's masks."""
    enc = MLP()
    other = copy.deepcopy(enc)
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    cached_step([enc], (x1, x2), 4, loss_fn, seed=7)
    reference_step([other], [0, 0], (x1, x2), [4], loss_fn, seed=8)
    assert _err(enc.net[0].weight.grad, other.net[0].weight.grad) > 1e-4


def test_without_dropout_or_batchnorm_equals_one_call_on_the_whole_batch():
    enc = MLP(p=0.0)
    ref = copy.deepcopy(enc)
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)  # a learnable temperature in the loss
    tau_ref = tau.detach().clone().requires_grad_()
    x1, x2 = _data(n=13)
    loss = GradCache(enc, chunk_size=4).step(lambda a, b: C.clip_loss(a, b, tau), x1, x2)
    want = C.clip_loss(ref(x1), ref(x2), tau_ref)
    want.backward()
    assert _err(loss, want) <= TOL and _err(tau.grad, tau_ref.grad) <= TOL
    assert_same_grads([enc], [ref])


def test_learnable_siglip_temperature_and_bias_get_the_full_batch_gradient():
    encs = [MLP(p=0.0, seed=0), MLP(p=0.0, seed=1)]
    refs = copy.deepcopy(encs)
    t, b = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.1, -10.0))
    t_ref, b_ref = (v.detach().clone().requires_grad_() for v in (t, b))
    x1, x2 = _data(n=11)
    loss = GradCache(encs, chunk_size=(4, 5)).step(lambda u, v: C.siglip_loss(u, v, t, b), x1, x2)
    want = C.siglip_loss(refs[0](x1), refs[1](x2), t_ref, b_ref)
    want.backward()
    assert _err(loss, want) <= TOL and _err(t.grad, t_ref.grad) <= TOL and _err(b.grad, b_ref.grad) <= TOL
    assert_same_grads(encs, refs)


def test_gradients_accumulate_like_backward():
    enc, ref = MLP(p=0.0), MLP(p=0.0)
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    cache = GradCache(enc, chunk_size=3)
    cache.step(loss_fn, x1, x2)
    cache.step(loss_fn, x2, x1)
    loss_fn(ref(x1), ref(x2)).backward()
    loss_fn(ref(x2), ref(x1)).backward()
    assert_same_grads([enc], [ref])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_stats_updated_once_per_chunk(momentum):
    enc = MLP(bn=True, momentum=momentum)
    once = copy.deepcopy(enc)
    x1, x2 = _data()
    GradCache(enc, chunk_size=4).step(lambda z1, z2: C.info_nce(z1, z2, TAU), x1, x2)
    with torch.no_grad():  # each chunk through the model once, train mode
        for x in (x1, x2):
            for c in x.tensor_split(3):  # 4, 3, 3 rows
                once(c)
    bn, bn_once = enc.net[1], once.net[1]
    assert int(bn.num_batches_tracked) == 6 == int(bn_once.num_batches_tracked)
    assert torch.equal(bn.running_mean, bn_once.running_mean) and torch.equal(
        bn.running_var, bn_once.running_var
    )
    enc.eval()  # eval mode: statistics untouched
    before = bn.running_mean.clone()
    GradCache(enc, chunk_size=4).step(lambda z1, z2: C.info_nce(z1, z2, TAU), x1, x2)
    assert torch.equal(before, bn.running_mean) and int(bn.num_batches_tracked) == 6


def test_dict_inputs_two_towers_with_their_own_chunk_sizes():
    g = torch.Generator().manual_seed(3)

    def tokens(n, L):
        mask = torch.rand(n, L, generator=g) < 0.7
        mask[:, 0] = True
        return {"ids": torch.randint(0, 20, (n, L), generator=g), "mask": mask}

    q, d = tokens(B, 5), tokens(B, 7)
    encs = [TokenEncoder(seed=0), TokenEncoder(seed=1)]
    refs = copy.deepcopy(encs)
    loss_fn = lambda a, b: C.clip_loss(a, b, 0.1)  # noqa: E731
    want = reference_step(refs, [0, 1], (q, d), [3, 4], loss_fn, seed=5)
    got = cached_step(encs, (q, d), (3, 4), loss_fn, seed=5)
    assert _err(got, want) <= TOL
    assert_same_grads(encs, refs)


class TwoHeads(nn.Module):
    """Returns a tuple (h, z) like SimCLR's model; the loss uses only z."""

    def __init__(self):
        super().__init__()
        self.f, self.g = MLP(d_out=5, seed=3), nn.Linear(5, 4, dtype=torch.float64)

    def forward(self, pair):
        a, b = pair  # a tuple input
        h = self.f(a + b)
        return h, self.g(h)


def test_tuple_inputs_and_outputs_with_unused_outputs():
    enc = TwoHeads()
    ref = copy.deepcopy(enc)
    x1, x2 = _data()
    inputs = ((x1, x2), (x2, x1))
    loss_fn = lambda o1, o2: C.info_nce(o1[1], o2[1], TAU)  # noqa: E731
    torch.manual_seed(4)
    outs = []
    for x in inputs:
        hs, zs = zip(
            *[ref(tuple(p[c] for p in (x[0].tensor_split(3), x[1].tensor_split(3)))) for c in range(3)]
        )
        outs.append((torch.cat(hs), torch.cat(zs)))
    want = loss_fn(*outs)
    want.backward()
    got = cached_step([enc], inputs, 4, loss_fn, seed=4)
    assert _err(got, want) <= TOL
    assert_same_grads([enc], [ref])


def _count_forwards(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_chunk_size_at_least_the_batch_is_a_plain_step():
    enc, ref = MLP(bn=True), None
    ref = copy.deepcopy(enc)
    calls = _count_forwards(enc)
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    torch.manual_seed(0)
    GradCache(enc, chunk_size=B).step(loss_fn, x1, x2)
    assert calls == [B, B]  # one forward per input, no second pass
    torch.manual_seed(0)
    loss_fn(ref(x1), ref(x2)).backward()
    assert_same_grads([enc], [ref])
    calls.clear()
    GradCache(enc, chunk_size=4).step(loss_fn, x1, x2)
    # pass 1 over both inputs, pass 2 again but for the last chunk, whose graph pass 1 kept
    assert calls == [4, 3, 3] * 3 + [4, 3]


class _Synced(torch.nn.Module):
    """An encoder with ``no_sync`` (as DDP has) that records how often it was entered."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.no_sync_calls = inner, 0

    def forward(self, x):
        return self.inner(x)

    def no_sync(self):
        self.no_sync_calls += 1
        return contextlib.nullcontext()


def test_last_chunk_kept_only_without_no_sync():
    """A synchronising encoder (DDP) gets every chunk embedded twice, so that its one
    synchronising backward comes last; the gradients are the same either way."""
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    plain, synced = MLP(), _Synced(MLP())
    calls = _count_forwards(synced.inner)
    for enc in (plain, synced):
        torch.manual_seed(0)
        GradCache(enc, chunk_size=4).step(loss_fn, x1, x2)
    assert calls == [4, 3, 3] * 4
    assert synced.no_sync_calls == 5  # every backward but the last one
    assert_same_grads([plain], [synced.inner])


def test_frozen_tower_is_not_re_embedded():
    img, txt = MLP(seed=0), MLP(seed=1)
    txt.requires_grad_(False)
    refs = copy.deepcopy([img, txt])
    calls = _count_forwards(txt)
    x1, x2 = _data()
    loss_fn = lambda a, b: C.clip_loss(a, b, 0.1)  # noqa: E731
    cached_step([img, txt], (x1, x2), 4, loss_fn, seed=2)
    assert calls == [4, 3, 3]
    reference_step(refs, [0, 1], (x1, x2), [4, 4], loss_fn, seed=2)
    assert_same_grads([img], refs[:1])
    assert all(p.grad is None for p in txt.parameters())


def test_grad_scaler_scales_the_cached_gradient():
    enc, ref = MLP(p=0.0), MLP(p=0.0)
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7)
    loss = GradCache(enc, chunk_size=4, scaler=scaler).step(loss_fn, x1, x2)
    want = loss_fn(ref(x1), ref(x2))
    want.backward()
    assert _err(loss, want) <= TOL  # the returned loss is not scaled
    for p, q in zip(enc.parameters(), ref.parameters()):
        assert _err(p.grad / 2.0**7, q.grad) <= TOL


def test_autocast_bfloat16_matches_the_plain_step_under_autocast():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    ref = copy.deepcopy(enc)
    x1, x2 = (x.float() for x in _data(n=12))
    seen = []

    def loss_fn(z1, z2):
        seen.append(z1.dtype)
        return C.info_nce(z1, z2, TAU)

    loss = GradCache(enc, chunk_size=5, autocast=torch.bfloat16).step(loss_fn, x1, x2)
    assert seen == [torch.float32]  # half embeddings reach the loss in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = ref(x1), ref(x2)
    want = loss_fn(z1.float(), z2.float())
    want.backward()
    assert _err(loss, want) <= 2e-2
    for p, q in zip(enc.parameters(), ref.parameters()):
        assert _err(p.grad, q.grad) <= 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CUDA generator's replay)")
def test_cuda_dropout_replay_and_float16_grad_scaler():
    encs = [MLP(bn=True).cuda(), MLP(seed=1).cuda()]
    refs = copy.deepcopy(encs)
    x1, x2 = (x.cuda() for x in _data())
    loss_fn = lambda a, b: C.clip_loss(a, b, 0.1)  # noqa: E731
    want = reference_step(refs, [0, 1], (x1, x2), [4, 3], loss_fn, seed=9)
    got = cached_step(encs, (x1, x2), (4, 3), loss_fn, seed=9)
    assert _err(got, want) <= TOL
    assert_same_grads(encs, refs)
    # float16 autocast with a GradScaler: the plain AMP step, to float16's tolerance
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 8)).cuda()
    ref = copy.deepcopy(enc)
    f1, f2 = x1.float(), x2.float()
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12)
    loss = GradCache(enc, chunk_size=4, scaler=scaler, autocast=torch.float16).step(loss_fn, f1, f2)
    with torch.autocast("cuda", dtype=torch.float16):
        z1, z2 = ref(f1), ref(f2)
    want = loss_fn(z1.float(), z2.float())
    (want * 2.0**12).backward()
    assert _err(loss, want) <= 2e-2
    for p, q in zip(enc.parameters(), ref.parameters()):
        assert _err(p.grad / 2.0**12, q.grad / 2.0**12) <= 2e-2


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_raise_clear_errors():
    enc = MLP()
    x1, x2 = _data()
    ok = lambda z1, z2: C.info_nce(z1, z2)  # noqa: E731
    for bad, err, msg in [
        (0, ValueError, "chunk_size must be >= 1"),
        (-3, ValueError, "chunk_size must be >= 1"),
        (2.5, TypeError, "chunk_size must be a positive int"),
        (True, TypeError, "positive int"),
        ((4, 4), ValueError, "2 entries for 1 encoder"),
    ]:
        with pytest.raises(err, match=msg):
            GradCache(enc, chunk_size=bad)
    with pytest.raises(TypeError, match=r"encoders\[1\] must be an nn.Module"):
        GradCache((enc, lambda x: x))
    with pytest.raises(TypeError, match="scaler must be"):
        GradCache(enc, scaler=1.0)
    cache = GradCache(enc, chunk_size=4)
    with pytest.raises(ValueError, match="different batch sizes"):
        cache.step(lambda d: d.sum(), {"a": x1, "b": x2[:7]})
    with pytest.raises(ValueError, match="empty batch"):
        cache.step(ok, x1[:0], x2[:0])
    with pytest.raises(TypeError, match=r"inputs\[1\]\['s'\] must be a tensor"):
        cache.step(ok, x1, {"s": "text"})
    with pytest.raises(ValueError, match="at least one input"):
        cache.step(ok)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        cache.step("info_nce", x1, x2)
    with pytest.raises(ValueError, match="2 encoders and step got 3 inputs"):
        GradCache((enc, MLP())).step(ok, x1, x2, x1)
    with pytest.raises(ValueError, match="towers must give"):
        GradCache((enc, MLP())).step(ok, x1, x2, towers=(0, 2))
    with pytest.raises(RuntimeError, match="outside torch.no_grad"):
        with torch.no_grad():
            cache.step(ok, x1, x2)
    with pytest.raises(ValueError, match="chunk's rows first"):
        GradCache(nn.Flatten(0), chunk_size=4).step(lambda z: z.sum(), x1)
    # losses that cannot be cached; no gradient is left behind
    for fn, err, msg in [
        (lambda z1, z2: C.info_nce(z1, z2, reduction="none"), ValueError, "must return a scalar"),
        (lambda z1, z2: 1.0, TypeError, "scalar tensor, got float"),
        (lambda z1, z2: C.info_nce(z1.detach(), z2.detach()), ValueError, "does not require grad"),
    ]:
        with pytest.raises(err, match=msg):
            cache.step(fn, x1, x2)
        assert all(p.grad is None for p in enc.parameters())


def test_mismatched_batch_sizes_reach_the_loss_error():
    """Different sizes across inputs are legal (K hard negatives per query); a loss that needs
    equal sizes names them."""
    with pytest.raises(ValueError, match="must have the same shape"):
        GradCache(MLP(), chunk_size=4).step(lambda z1, z2: C.info_nce(z1, z2), _data()[0], _data()[1][:7])


# ----------------------------------------------------------------------------- DDP on 2 gloo ranks
def _ddp_case(rank, world):
    """Under DDP with global-batch losses, every parameter gradient equals the single-process
    step over the global batch; gradients are all-reduced once per step, not once per chunk."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    errors, n = {}, 6
    X1, X2 = _data(seed=5, n=n * world)
    s = slice(rank * n, (rank + 1) * n)
    for name, two, dist_fn, ref_fn, chunk in [
        ("info_nce", False, cd.info_nce, C.info_nce, 4),
        ("clip_loss", True, cd.clip_loss, C.clip_loss, 4),
        ("info_nce_plain_step", False, cd.info_nce, C.info_nce, n),
    ]:
        encs = [MLP(seed=1, bn=True)] + ([MLP(seed=2, bn=True)] if two else [])
        refs = copy.deepcopy(encs)
        towers = [0, 1] if two else [0, 0]
        reduces = []
        ddps = []
        for e in encs:
            m = DDP(e)
            m.register_comm_hook(
                None,
                # the hook runs within this iteration's steps; DDP wants exactly (state, bucket)
                lambda _, bucket: (
                    reduces.append(1),  # noqa: B023 -- count, then all-reduce
                    allreduce_hook(dist.group.WORLD, bucket),
                )[1],
            )
            ddps.append(m)
        embeddings = [[], []]  # reference: every rank's chunks under that rank's seed
        for r in range(world):
            torch.manual_seed(100 + r)
            for i, X in enumerate((X1, X2)):
                embeddings[i] += [refs[towers[i]](c) for c in _split(X[r * n : (r + 1) * n], chunk)]
        want = ref_fn(torch.cat(embeddings[0]), torch.cat(embeddings[1]), TAU)
        want.backward()
        cache = GradCache(ddps if two else ddps[0], chunk_size=chunk)
        for step in (1, 2):  # a second step: DDP's state is left ready for the next one
            reduces.clear()
            for e in encs:
                e.zero_grad()
            torch.manual_seed(100 + rank)
            got = cache.step(lambda a, b, dist_fn=dist_fn: dist_fn(a, b, TAU), X1[s], X2[s])
            errors[f"{name}/{step}/loss"] = _err(got, want)
            for k, (e, r) in enumerate(zip(encs, refs)):
                for (pname, p), q in zip(e.named_parameters(), r.parameters()):
                    errors[f"{name}/{step}/tower{k}/{pname}"] = _err(p.grad, q.grad)
            errors[f"{name}/{step}/all-reduces ({len(reduces)}) == towers"] = (
                0.0 if len(reduces) == len(encs) else 1.0
            )
    return errors


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_two_ranks_equal_single_process_global_batch():
    from .test_distributed import check_all_ok, spawn

    check_all_ok(spawn(2, _ddp_case), 2)


# ----------------------------------------------------------------------------- the deferred form
@pytest.mark.parametrize("chunk", [3, 20], ids=["cached", "plain"])
def test_deferred_loss_runs_pass_two_in_backward_scaled_by_grad_output(chunk):
    """GradCache.loss: the value of step, nothing in .grad until backward, then g * the step's
    gradient (dropout replayed, a learnable temperature included), RNG as before the backward."""
    enc = MLP()
    ref = copy.deepcopy(enc)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    tau_ref = tau.detach().clone().requires_grad_()
    x1, x2 = _data(n=11)
    torch.manual_seed(5)
    want = GradCache(ref, chunk_size=chunk).step(lambda a, b: C.info_nce(a, b, tau_ref), x1, x2)
    torch.manual_seed(5)
    loss = GradCache(enc, chunk_size=chunk).loss(lambda a, b: C.info_nce(a, b, tau), x1, x2)
    assert loss.requires_grad and _err(loss, want) <= TOL
    assert all(p.grad is None for p in enc.parameters()) and tau.grad is None
    state = torch.get_rng_state()
    (0.7 * loss).backward()
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(enc.parameters(), ref.parameters()):
        assert _err(p.grad, 0.7 * q.grad) <= TOL
    assert _err(tau.grad, 0.7 * tau_ref.grad) <= TOL
    if chunk == 3:
        with pytest.raises(RuntimeError, match="twice"):
            loss.backward()
    with torch.no_grad(), pytest.raises(RuntimeError, match="no_grad"):
        GradCache(enc, chunk_size=chunk).loss(lambda a, b: C.info_nce(a, b), x1, x2)


@pytest.mark.parametrize("chunk", [3, 4, B])
def test_s6_inputs_that_require_grad_get_the_plain_steps_gradient(chunk):
    """Issue 24, S6: chunking leaves ``x.grad`` as the plain path fills it (float64, 1e-10)."""
    enc, ref = MLP(p=0.0), None
    ref = copy.deepcopy(enc)
    x1, x2 = (x.clone().requires_grad_() for x in _data())
    r1, r2 = (x.detach().clone().requires_grad_() for x in (x1, x2))
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    GradCache(enc, chunk_size=chunk).step(loss_fn, x1, x2)
    loss_fn(ref(r1), ref(r2)).backward()
    for got, want in ((x1, r1), (x2, r2)):
        assert got.grad is not None and _err(got.grad, want.grad) <= TOL
    assert_same_grads([enc], [ref])
    only = torch.randn(B, 6, dtype=torch.float64, requires_grad=True)  # a frozen encoder: only x learns
    frozen = MLP(p=0.0).requires_grad_(False)
    GradCache(frozen, chunk_size=3).step(lambda z: z.square().sum(), only)
    torch.testing.assert_close(
        only.grad, torch.autograd.grad(frozen(only).square().sum(), only)[0], rtol=0, atol=TOL
    )


def test_also_batchnorm_with_one_row_chunks_is_refused_before_any_work():
    enc = MLP(bn=True)
    before = copy.deepcopy(enc.state_dict())
    x1, x2 = _data()
    loss_fn = lambda z1, z2: C.info_nce(z1, z2, TAU)  # noqa: E731
    for chunk in (1, 3):  # B = 10 rows: chunks of 1, or 3-3-3-1... balanced to 3-3-2-2 (no 1-row chunk)
        if chunk == 1:
            with pytest.raises(ValueError, match="BatchNorm in train mode.*chunk_size=2"):
                GradCache(enc, chunk_size=chunk).step(loss_fn, x1, x2)
            assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())
        else:
            GradCache(enc, chunk_size=chunk).step(loss_fn, x1, x2)
    enc.eval()  # eval mode normalises with the running statistics: one row is fine
    GradCache(enc, chunk_size=1).step(loss_fn, x1, x2)
