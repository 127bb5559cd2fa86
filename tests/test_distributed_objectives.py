"""contrastive.distributed.supcon_loss / retrieval_loss / siglip_loss on 2 and 3 gloo ranks: the
tests of _dist_objectives.py (validation, the cross-rank checks) and ops/dist_objectives.py
(the row-owner passes).

The harness (spawned gloo jobs, one battery of checks per job, errors reported to the parent)
is tests/test_distributed.py's. The reference for every check is the naive autograd
oracle of the objective (tests/oracles.py) over the concatenated global batch, in float64, to 1e-10
(loss, input gradients in 'exact' and 'ddp' mode, learnable temperature and bias gradients),
and, once per objective, the single-process function of ``contrastive``.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import contrastive as C
import contrastive.distributed as cd
from tests import oracles
from tests.test_distributed import _err, _slices, check_all_ok, spawn


# ----------------------------------------------------------------------------- one comparison
def _compare(
    errors, name, rank, world, dist_fn, ref_fn, inputs, row_sizes, reduction, gradient, seed, params=()
):
    """dist_fn(local inputs, *params) on this rank against ref_fn(global inputs, *params).

    inputs: [(global tensor or None, sizes to split it by, requires grad)]; ref_fn returns the
    per-row losses (global) and the 'mean' denominator; params: float64 scalars (temperature,
    bias), passed as tensors that require grad."""
    g = torch.Generator().manual_seed(seed)
    n_rows = sum(row_sizes)
    W = torch.rand(n_rows, generator=g, dtype=torch.float64) + 0.5
    # single process, whole batch
    ref_in = [None if x is None else x.clone().requires_grad_(rg) for x, _, rg in inputs]
    ref_p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params]
    rows, n_mean = ref_fn(*ref_in, *ref_p)
    ref = {"mean": rows.sum() / max(n_mean, 1), "sum": rows.sum(), "none": rows}[reduction]
    (ref * W).sum().backward() if reduction == "none" else (2 * ref).backward()
    # this rank's share
    loc = [None if x is None else x[_slices(s)[rank]].clone().requires_grad_(rg) for x, s, rg in inputs]
    loc_p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params]
    out = dist_fn(*loc, *loc_p, reduction=reduction, gradient=gradient)
    mine = _slices(row_sizes)[rank]
    if reduction == "none":
        errors[name + "/loss"] = _err(out, ref[mine])
        assert out.shape == (row_sizes[rank],), (name, out.shape)
        (out * W[mine]).sum().backward()
    else:
        errors[name + "/loss"] = _err(out, ref)
        (2 * out).backward()
    scale = world if gradient == "ddp" else 1
    for k, ((x, s, rg), r, l) in enumerate(zip(inputs, ref_in, loc)):
        if x is not None and rg:
            errors[f"{name}/grad{k}"] = _err(l.grad, scale * r.grad[_slices(s)[rank]])
    for k, (r, l) in enumerate(zip(ref_p, loc_p)):
        errors[f"{name}/grad_param{k}"] = _err(l.grad, r.grad)


# the former symmetric=True: both directions, each its own softmax, averaged
TWO_WAY = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}


def _supcon(errors, rank, world, sizes, seed, tau, reduction, gradient="exact", normalize=True, bs=3):
    g = torch.Generator().manual_seed(100 + seed)
    N = sum(sizes)
    Z = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    y[-1] = 99  # one row without a positive
    name = f"supcon/{sizes}/{reduction}/{gradient}/tau={tau}/norm={normalize}/bs={bs}"
    s = _slices(sizes)[rank]
    _compare(
        errors,
        name,
        rank,
        world,
        lambda z, t, **kw: cd.supcon_loss(z, y[s], t, normalize=normalize, block_size=bs, **kw),
        lambda z, t: (
            oracles.supcon_loss(z, y, t, "none", normalize=normalize),
            oracles.supcon_anchor_count(y),
        ),
        [(Z, sizes, True)],
        sizes,
        reduction,
        gradient,
        seed,
        (tau,),
    )


def _retrieval(
    errors,
    rank,
    world,
    sizes,
    seed,
    tau,
    reduction,
    negatives,
    gradient="exact",
    symmetric=False,
    ids=False,
    bs=3,
    neg_grad=True,
):
    g = torch.Generator().manual_seed(200 + seed)
    B, d = sum(sizes), 4
    A = torch.randn(B, d, generator=g, dtype=torch.float64)
    P = A + 0.7 * torch.randn(B, d, generator=g, dtype=torch.float64)
    if negatives == "per_anchor":
        Ng, nsz = torch.randn(B, 2, d, generator=g, dtype=torch.float64), sizes
    elif negatives == "shared":
        nsz = [(2 * r + 1) % 4 for r in range(world)]  # 1, 3, 1: not the anchors' split
        Ng = torch.randn(sum(nsz), d, generator=g, dtype=torch.float64)
    else:
        Ng, nsz = None, sizes
    I = torch.randint(0, max(2, B // 2), (B,), generator=g) if ids else None
    s = _slices(sizes)[rank]
    name = f"retrieval/{sizes}/{negatives}/{reduction}/{gradient}/tau={tau}/sym={symmetric}/ids={ids}/bs={bs}"

    def dist_fn(a, p, n, t, **kw):
        return cd.retrieval_loss(
            a,
            p,
            n,
            t,
            **(TWO_WAY if symmetric else {}),
            positive_ids=None if I is None else I[s],
            block_size=bs,
            **kw,
        )

    def ref_fn(a, p, n, t):
        return oracles.retrieval_loss(a, p, n, t, "none", symmetric=symmetric, ids=I), B

    _compare(
        errors,
        name,
        rank,
        world,
        dist_fn,
        ref_fn,
        [(A, sizes, True), (P, sizes, True), (Ng, nsz, neg_grad)],
        sizes,
        reduction,
        gradient,
        seed,
        (tau,),
    )


def _siglip(errors, rank, world, sizes, seed, tau, bias, reduction, gradient="exact", normalize=True, bs=3):
    g = torch.Generator().manual_seed(300 + seed)
    B = sum(sizes)
    A = torch.randn(B, 5, generator=g, dtype=torch.float64)
    Bt = A + 0.5 * torch.randn(B, 5, generator=g, dtype=torch.float64)
    name = f"siglip/{sizes}/{reduction}/{gradient}/tau={tau}/bias={bias}/norm={normalize}/bs={bs}"
    _compare(
        errors,
        name,
        rank,
        world,
        lambda a, b, t, c, **kw: cd.siglip_loss(a, b, t, c, normalize=normalize, block_size=bs, **kw),
        lambda a, b, t, c: (oracles.siglip_loss(a, b, t, c, "none", normalize=normalize), B),
        [(A, sizes, True), (Bt, sizes, True)],
        sizes,
        reduction,
        gradient,
        seed,
        (tau, bias),
    )


def exactness_case(rank, world):
    errors = {}
    size_sets = {2: [[3, 5], [4, 4]], 3: [[2, 3, 4], [3, 0, 2]]}[world]
    for k, sizes in enumerate(size_sets):
        for reduction in ("mean", "sum", "none"):
            _supcon(errors, rank, world, sizes, k, 0.3, reduction)
            _retrieval(errors, rank, world, sizes, k, 0.3, reduction, "per_anchor", ids=True)
            _siglip(errors, rank, world, sizes, k, 0.3, -2.0, reduction)
        _supcon(errors, rank, world, sizes, k, 0.5, "mean", gradient="ddp", bs=None)
        _supcon(errors, rank, world, sizes, k, 0.002, "none", bs=2)  # online max
        _supcon(errors, rank, world, sizes, k, 2.0, "sum", normalize=False, gradient="ddp")
        _retrieval(errors, rank, world, sizes, k, 0.05, "mean", None, symmetric=True, gradient="ddp")
        _retrieval(errors, rank, world, sizes, k, 0.2, "none", "shared", symmetric=True, ids=True)
        _retrieval(errors, rank, world, sizes, k, 0.2, "mean", "shared", neg_grad=False, bs=None)
        _retrieval(errors, rank, world, sizes, k, 0.002, "sum", "per_anchor", symmetric=True, ids=True, bs=2)
        _siglip(errors, rank, world, sizes, k, 0.1, -10.0, "mean", gradient="ddp", bs=None)
        _siglip(errors, rank, world, sizes, k, 0.01, 3.0, "none", normalize=False, bs=2)
    return errors


def single_process_case(rank, world):
    """The distributed forms equal contrastive's single-process functions (float64)."""
    errors, sizes = {}, [3, 5] if world == 2 else [2, 3, 4]
    g = torch.Generator().manual_seed(5)
    N = sum(sizes)
    Z, Z2 = (torch.randn(N, 6, generator=g, dtype=torch.float64) for _ in range(2))
    Ng = torch.randn(N, 2, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    s = _slices(sizes)[rank]
    errors["supcon vs C.supcon_loss"] = _err(cd.supcon_loss(Z[s], y[s]), C.supcon_loss(Z, y))
    errors["retrieval vs C.retrieval_loss"] = _err(
        cd.retrieval_loss(Z[s], Z2[s], Ng[s], **TWO_WAY, positive_ids=y[s]),
        C.retrieval_loss(Z, Z2, Ng, **TWO_WAY, positive_ids=y),
    )
    errors["siglip vs C.siglip_loss"] = _err(cd.siglip_loss(Z[s], Z2[s]), C.siglip_loss(Z, Z2))
    return errors


def bad_input_case(rank, world):
    """Bad input on rank 1 raises there and DistributedError naming rank 1 elsewhere; a setting that
    differs across ranks is rejected on every rank; the group still works afterwards."""
    errors = {}
    z = torch.randn(
        4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )  # the same on every rank
    calls = {
        "float labels": (
            lambda: cd.supcon_loss(z, torch.zeros(4) if rank == 1 else torch.zeros(4, dtype=torch.long)),
            "labels must hold integer",
        ),
        "labels shape": (
            lambda: cd.supcon_loss(z, torch.zeros(3 if rank == 1 else 4, dtype=torch.long)),
            "labels must have shape (4,)",
        ),
        "K = 0": (
            lambda: cd.retrieval_loss(z, z, torch.randn(4, 0 if rank == 1 else 2, 3, dtype=torch.float64)),
            "K = 0",
        ),
        "negatives rows": (
            lambda: cd.retrieval_loss(z, z, torch.randn(3 if rank == 1 else 4, 2, 3, dtype=torch.float64)),
            "one row per anchor",
        ),
        "bias nan": (
            lambda: cd.siglip_loss(z, z, bias=float("nan") if rank == 1 else -10.0),
            "bias must be finite",
        ),
    }
    for key, (call, msg) in calls.items():
        try:
            call()
            errors[f"{key}: no error"] = float("inf")
        except (TypeError, ValueError) as e:
            errors[key] = 0.0 if rank == 1 and msg in str(e) else float("inf")
        except cd.DistributedError as e:
            errors[key] = 0.0 if rank != 1 and "rank(s) [1] rejected" in str(e) else float("inf")
    mismatches = {
        "bias": lambda: cd.siglip_loss(z, z, bias=-10.0 + rank),
        "directions": lambda: cd.retrieval_loss(z, z, **(TWO_WAY if rank == 0 else {})),
        "hcl_beta": lambda: cd.info_nce(z, z, hcl_beta=0.5 if rank else None),
        "matryoshka_dims and matryoshka_weights": lambda: cd.clip_loss(z, z, matryoshka_dims=(3, 1 + rank)),
        "hardness_mode": lambda: cd.retrieval_loss(z, z, hardness_mode="all_negatives" if rank else None),
        "use of positive_ids": lambda: cd.retrieval_loss(
            z, z, positive_ids=torch.arange(4) if rank else None
        ),
    }
    for key, call in mismatches.items():
        try:
            call()
            errors[f"{key} mismatch: no error"] = float("inf")
        except ValueError as e:
            errors[f"{key} mismatch"] = 0.0 if f"{key} differs across ranks" in str(e) else float("inf")
    y = torch.tensor([0, 1, 0, 1])
    errors["after errors"] = _err(
        cd.supcon_loss(z, y),
        oracles.supcon_loss(torch.cat([z] * world), y.repeat(world), 0.1),  # every row has a positive
    )
    return errors


class _Towers(torch.nn.Module):
    """Two linear towers with a learnable temperature and bias, as SigLIP trains them."""

    def __init__(self):
        super().__init__()
        self.f = torch.nn.Linear(6, 5, dtype=torch.float64)
        self.g = torch.nn.Linear(6, 5, dtype=torch.float64)
        self.log_t = torch.nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.tensor(-3.0, dtype=torch.float64))

    def forward(self, x, y):
        return self.f(x), self.g(y), self.log_t.exp(), self.bias


def ddp_and_float32_case(rank, world):
    """After DDP averages gradients, every parameter's .grad is the full-batch one (default
    gradient='ddp'); float32 inputs agree with float64 to 1e-5 and half precision returns its dtype."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    errors, sizes = {}, [3, 5] if world == 2 else [2, 0, 4]
    torch.manual_seed(0)
    ref_model, model = _Towers(), DDP(_Towers())
    model.module.load_state_dict(ref_model.state_dict())
    g = torch.Generator().manual_seed(11)
    B = sum(sizes)
    X, Y = (
        torch.randn(B, 6, generator=g, dtype=torch.float64),
        torch.randn(B, 6, generator=g, dtype=torch.float64),
    )
    labels = torch.randint(0, 3, (B,), generator=g)
    s = _slices(sizes)[rank]
    losses = {
        "siglip": (
            lambda a, b, t, c: cd.siglip_loss(a, b, t, c),
            lambda a, b, t, c: oracles.siglip_loss(a, b, t, c),
        ),
        "supcon": (
            lambda a, b, t, c: cd.supcon_loss(a + b, labels[s], t) + 0 * c,
            lambda a, b, t, c: oracles.supcon_loss(a + b, labels, t) + 0 * c,
        ),
        "retrieval": (
            lambda a, b, t, c: cd.retrieval_loss(a, b, None, t, reduction="none").sum() / B + 0 * c,
            lambda a, b, t, c: oracles.retrieval_loss(a, b, None, t) + 0 * c,
        ),
    }
    for name, (dist_fn, ref_fn) in losses.items():
        ref_model.zero_grad()
        model.zero_grad()
        ref_fn(*ref_model(X, Y)).backward()
        dist_fn(*model(X[s], Y[s])).backward()
        for (pname, p), q in zip(model.module.named_parameters(), ref_model.parameters()):
            errors[f"ddp/{name}/{pname}"] = _err(p.grad, q.grad)
    for name, call in [
        ("supcon", lambda a, b: cd.supcon_loss(a, labels[s])),
        ("retrieval", lambda a, b: cd.retrieval_loss(a, b, **TWO_WAY)),
        ("siglip", lambda a, b: cd.siglip_loss(a, b)),
    ]:
        ref = {
            "supcon": lambda: oracles.supcon_loss(X, labels, 0.1),
            "retrieval": lambda: oracles.retrieval_loss(X, Y, None, 0.05, symmetric=True),
            "siglip": lambda: oracles.siglip_loss(X, Y, 0.1, -10.0),
        }[name]()
        errors[f"float32/{name}"] = max(0.0, _err(call(X[s].float(), Y[s].float()), ref) - 1e-5)
        out = call(X[s].bfloat16(), Y[s].bfloat16())
        errors[f"bfloat16/{name}"] = max(0.0, _err(out.double(), ref) - 2e-2) + (out.dtype != torch.bfloat16)
    # the loss features in float32 against float64 single-process values
    feats = {
        "gte": dict(directions=ALL_DIRS, hardness_mode="all_negatives", hardness_strength=1.0),
        "hcl": dict(hcl_beta=0.5, hcl_tau_plus=0.1),
        "gist": dict(guide=(X[:, :3], Y[:, :3]), contrast_anchors=True),
        "mrl": dict(matryoshka_dims=(6, 2, 4)),
    }
    for name, kw in feats.items():
        local = dict(kw)
        if "guide" in kw:
            local["guide"] = tuple(x[s] for x in kw["guide"])
        ref = C.retrieval_loss(X, Y, None, 0.1, **kw)
        out = cd.retrieval_loss(X[s].float(), Y[s].float(), None, 0.1, **local)
        errors[f"float32/retrieval-{name}"] = max(0.0, _err(out, ref) - 1e-5) + (out.dtype != torch.float32)
    return errors


# ----------------------------------------------------------------------------- issue 25's features
MRL = {"matryoshka_dims": (6, 2, 4, 2), "matryoshka_weights": (1.0, 0.5, 2.0, 0.25)}


def _pairs(kind, errors, rank, world, sizes, seed, reduction, gradient, **kw):
    """info_nce / clip_loss / siglip_loss with feature arguments ``kw`` against their
    single-process function on the global batch."""
    g = torch.Generator().manual_seed(400 + seed)
    B = sum(sizes)
    X = torch.randn(B, 6, generator=g, dtype=torch.float64)
    Y = X + 0.8 * torch.randn(B, 6, generator=g, dtype=torch.float64)
    name = f"{kind}/{sizes}/{reduction}/{gradient}/{sorted(kw)}"
    dist_fn, ref_fn, params = {
        "info_nce": (cd.info_nce, C.info_nce, (0.3,)),
        "clip": (cd.clip_loss, C.clip_loss, (0.2,)),
        "siglip": (cd.siglip_loss, C.siglip_loss, (0.3, -2.0)),
    }[kind]
    # the global rows in rank order: info_nce's rank r holds [z1_r; z2_r] (2 B_r rows)
    order = torch.arange(B)
    row_sizes = sizes
    if kind == "info_nce":
        order = torch.cat(
            [torch.cat([torch.arange(B)[sl], B + torch.arange(B)[sl]]) for sl in _slices(sizes)]
        )
        row_sizes = [2 * n for n in sizes]
    _compare(
        errors,
        name,
        rank,
        world,
        lambda a, b, *p, **k: dist_fn(a, b, *p, block_size=2, **kw, **k),
        lambda a, b, *p: (ref_fn(a, b, *p, reduction="none", block_size=3, **kw)[order], len(order)),
        [(X, sizes, True), (Y, sizes, True)],
        row_sizes,
        reduction,
        gradient,
        seed,
        params,
    )


def _supcon_mrl(errors, rank, world, sizes, seed, reduction, gradient):
    g = torch.Generator().manual_seed(500 + seed)
    N = sum(sizes)
    Z = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    s = _slices(sizes)[rank]
    _compare(
        errors,
        f"supcon-mrl/{sizes}/{reduction}/{gradient}",
        rank,
        world,
        lambda z, t, **kw: cd.supcon_loss(z, y[s], t, block_size=2, **MRL, **kw),
        lambda z, t: (C.supcon_loss(z, y, t, reduction="none", **MRL), oracles.supcon_anchor_count(y)),
        [(Z, sizes, True)],
        sizes,
        reduction,
        gradient,
        seed,
        (0.3,),
    )


def _features(
    errors,
    rank,
    world,
    sizes,
    seed,
    reduction,
    negatives,
    gradient="exact",
    ids=True,
    guide=False,
    neg_grad=True,
    **kw,
):
    """retrieval_loss with feature arguments ``kw`` against contrastive.retrieval_loss of the
    global batch (itself checked against the dense oracles in tests/ops)."""
    g = torch.Generator().manual_seed(600 + seed)
    B, d = sum(sizes), 6
    A = torch.randn(B, d, generator=g, dtype=torch.float64)
    P = A + 0.7 * torch.randn(B, d, generator=g, dtype=torch.float64)
    if negatives == "per_anchor":
        Ng, nsz = torch.randn(B, 2, d, generator=g, dtype=torch.float64), sizes
    elif negatives == "shared":
        nsz = [(2 * r + 1) % 4 for r in range(world)]
        Ng = torch.randn(sum(nsz), d, generator=g, dtype=torch.float64)
    else:
        Ng, nsz = None, sizes
    I = torch.randint(0, max(2, B // 2), (B,), generator=g) if ids else None
    G = None
    if guide:  # a guide of width 3 that is close to the embeddings, so that it masks some candidates
        W3 = torch.randn(d, 3, generator=g, dtype=torch.float64)
        gn = None if Ng is None else Ng @ W3
        G = (A @ W3, P @ W3, gn)
        if (
            guide == "dup"
        ):  # the last positive's guide row duplicates the first's (another rank's): a tie, kept
            G[1][-1] = G[1][0]
    s, sn = _slices(sizes)[rank], _slices(nsz)[rank]
    name = f"features/{sizes}/{negatives}/{reduction}/{gradient}/ids={ids}/guide={guide}/ng={neg_grad}/{kw}"

    def local_guide():
        if G is None:
            return None
        return (G[0][s], G[1][s], None if G[2] is None else G[2][sn])

    def dist_fn(a, p, n, t, **k):
        ids_r = None if I is None else I[s]
        return cd.retrieval_loss(a, p, n, t, positive_ids=ids_r, guide=local_guide(), block_size=2, **kw, **k)

    def ref_fn(a, p, n, t):
        return C.retrieval_loss(a, p, n, t, positive_ids=I, guide=G, reduction="none", block_size=3, **kw), B

    _compare(
        errors,
        name,
        rank,
        world,
        dist_fn,
        ref_fn,
        [(A, sizes, True), (P, sizes, True), (Ng, nsz, neg_grad)],
        sizes,
        reduction,
        gradient,
        seed,
        (0.3,),
    )


ALL_DIRS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")


def matryoshka_case(rank, world):
    errors = {}
    size_sets = {2: [[3, 5]], 3: [[2, 3, 4], [3, 0, 2]]}[world]
    for k, sizes in enumerate(size_sets):
        for reduction in ("mean", "sum", "none"):
            gradient = "ddp" if reduction == "sum" else "exact"
            for kind in ("info_nce", "clip", "siglip"):
                _pairs(kind, errors, rank, world, sizes, k, reduction, gradient, **MRL)
            _supcon_mrl(errors, rank, world, sizes, k, reduction, gradient)
            _features(errors, rank, world, sizes, k, reduction, "per_anchor", gradient, **MRL)
            _features(
                errors, rank, world, sizes, k, reduction, "shared", gradient, ids=False, **MRL, **TWO_WAY
            )
        # with a feature (a prefix at a time in one process too)
        _features(
            errors,
            rank,
            world,
            sizes,
            k,
            "mean",
            "per_anchor",
            hardness_mode="all_negatives",
            hardness_strength=2.0,
            **MRL,
        )
    return errors


def hcl_hardness_case(rank, world):
    errors = {}
    size_sets = {2: [[3, 5]], 3: [[2, 3, 4], [3, 0, 2]]}[world]
    for k, sizes in enumerate(size_sets):
        for reduction in ("mean", "sum", "none"):
            gradient = "ddp" if reduction == "sum" else "exact"
            _pairs(
                "info_nce", errors, rank, world, sizes, k, reduction, gradient, hcl_beta=0.7, hcl_tau_plus=0.1
            )
            _pairs(
                "clip", errors, rank, world, sizes, k, reduction, gradient, hcl_beta=0.5, hcl_tau_plus=0.05
            )
            for neg in ("per_anchor", "shared", None):
                _features(
                    errors, rank, world, sizes, k, reduction, neg, gradient, hcl_beta=0.6, hcl_tau_plus=0.1
                )
                for mode in ("in_batch_negatives", "hard_negatives", "all_negatives"):
                    _features(
                        errors,
                        rank,
                        world,
                        sizes,
                        k,
                        reduction,
                        neg,
                        gradient,
                        hardness_mode=mode,
                        hardness_strength=1.5,
                    )
        _pairs("info_nce", errors, rank, world, sizes, k, "mean", "exact", exclude_self=False, hcl_beta=0.3)
        # the clamp floor binds (large tau+): its temperature derivative
        _features(errors, rank, world, sizes, k, "mean", "per_anchor", hcl_beta=1.0, hcl_tau_plus=0.9)
    return errors


def directions_guide_case(rank, world):
    errors = {}
    size_sets = {2: [[3, 5]], 3: [[2, 3, 4], [3, 0, 2]]}[world]
    dir_sets = [
        {"directions": ALL_DIRS},
        {"directions": ("query_to_doc", "doc_to_query")},
        {"directions": ("query_to_doc", "query_to_query")},
        {"directions": ("query_to_doc", "doc_to_doc")},
        {**TWO_WAY, "hardness_mode": "in_batch_negatives", "hardness_strength": 1.0},
        {"directions": ALL_DIRS, "hardness_mode": "all_negatives", "hardness_strength": 0.5},
    ]
    guides = [
        {},
        {"guide_margin": 0.1, "guide_margin_strategy": "relative"},
        {"contrast_anchors": True, "contrast_positives": True},
        {
            "contrast_positives": True,
            "guide_margin": 0.05,
            "hardness_mode": "hard_negatives",
            "hardness_strength": 1.0,
        },
    ]
    for k, sizes in enumerate(size_sets):
        for reduction in ("mean", "sum", "none"):
            gradient = "ddp" if reduction == "sum" else "exact"
            for neg in ("per_anchor", "shared", None):
                for kw in dir_sets:
                    _features(errors, rank, world, sizes, k, reduction, neg, gradient, **kw)
                for kw in guides:
                    _features(errors, rank, world, sizes, k, reduction, neg, gradient, guide=True, **kw)
        _features(errors, rank, world, sizes, k, "mean", "per_anchor", ids=False, directions=ALL_DIRS, **MRL)
        _features(errors, rank, world, sizes, k, "none", "per_anchor", guide="dup", ids=False)
        _features(
            errors, rank, world, sizes, k, "mean", None, guide="dup", ids=False, contrast_positives=True
        )
        for neg in ("per_anchor", "shared"):  # negatives without gradient: no pass over their columns
            _features(
                errors,
                rank,
                world,
                sizes,
                k,
                "sum",
                neg,
                guide=True,
                neg_grad=False,
                directions=("query_to_doc",),
            )
            _features(errors, rank, world, sizes, k, "none", neg, neg_grad=False, directions=ALL_DIRS)
    return errors


def probe_case(rank, world):
    """No rank makes a tensor of N^2 elements (forward and backward) on the feature paths: the
    largest stays <= 4 N d at N = 256 global rows, d = 4, tiles of 16 (N^2 = 16 x 4 N d)."""
    from tests.ops.test_engine import _LargestTensor

    errors, N, d, bs = {}, 256, 4, 16
    sizes = [N // world + (r < N % world) for r in range(world)]
    g = torch.Generator().manual_seed(7)
    A, P = (torch.randn(N, d, generator=g, dtype=torch.float64) for _ in range(2))
    Ng = torch.randn(N, 2, d, generator=g, dtype=torch.float64)
    s = _slices(sizes)[rank]
    a, p, n = (x[s].clone().requires_grad_() for x in (A, P, Ng))
    y = torch.arange(N)[s] % 10
    mrl = {"matryoshka_dims": (3, 1, 4), "block_size": bs}
    kw = {"block_size": bs}
    calls = {
        "gte_hardness": lambda: cd.retrieval_loss(
            a,
            p,
            n,
            0.1,
            directions=ALL_DIRS,
            hardness_mode="all_negatives",
            hardness_strength=2.0,
            positive_ids=y,
            **kw,
        ),
        "hcl_retrieval": lambda: cd.retrieval_loss(a, p, n, 0.1, hcl_beta=1.0, hcl_tau_plus=0.1, **kw),
        "gist": lambda: cd.retrieval_loss(
            a,
            p,
            n,
            0.1,
            guide=(a.detach() + 0.5, p.detach() - 0.5, n.detach() * 2),
            contrast_anchors=True,
            contrast_positives=True,
            **kw,
        ),
        "hcl_info_nce": lambda: cd.info_nce(a, p, 0.1, hcl_beta=1.0, reduction="none", **kw).sum(),
        "hcl_clip": lambda: cd.clip_loss(a, p, 0.1, hcl_beta=1.0, **kw),
        "mrl_retrieval": lambda: cd.retrieval_loss(a, p, n, 0.1, **mrl),
        "mrl_supcon": lambda: cd.supcon_loss(a, y, **mrl),
        "mrl_siglip": lambda: cd.siglip_loss(a, p, **mrl),
    }
    for name, call in calls.items():
        with _LargestTensor() as mode:
            call_out = call()
            call_out.backward()
        errors[f"probe/{name}"] = 0.0 if mode.largest <= 4 * N * d else float(mode.largest)
    return errors


@pytest.mark.multiprocess
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", [matryoshka_case, hcl_hardness_case, directions_guide_case, probe_case])
def test_issue25_features_equal_one_process(world, case):
    """Matryoshka on every objective, HCL (info_nce, clip, retrieval), hardness, GTE directions and
    GIST guides on retrieval: loss, input, temperature and bias gradients at 2 and 3 ranks, uneven
    and empty per-rank batches, every reduction, equal to the single-process functions (float64)."""
    check_all_ok(spawn(world, case), world)


# ----------------------------------------------------------------------------- tests
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def all_cases(rank, world):
    """One spawned job runs every battery (spawning costs seconds, the checks milliseconds)."""
    return {
        **exactness_case(rank, world),
        **ddp_and_float32_case(rank, world),
        **single_process_case(rank, world),
    }


@pytest.mark.parametrize("world", [2, 3])
def test_losses_and_gradients_equal_one_process(world):
    """SupCon, retrieval (per-anchor and shared negatives, ids, symmetric) and SigLIP on uneven and
    empty per-rank batches, all reductions, both shift paths, exact and DDP-scaled gradients,
    learnable temperature and bias: equal to naive autograd of the global batch, float64, and to
    contrastive's single-process functions; DDP parameter gradients; float32 and bfloat16."""
    check_all_ok(spawn(world, all_cases), world)


def test_bad_input_on_one_rank_raises_everywhere():
    check_all_ok(spawn(2, bad_input_case), 2)


def test_single_process_fallback():
    g = torch.Generator().manual_seed(0)
    z, z2 = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(2))
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.equal(cd.supcon_loss(z, y), C.supcon_loss(z, y))
    assert torch.equal(cd.retrieval_loss(z, z2), C.retrieval_loss(z, z2))
    assert torch.equal(cd.siglip_loss(z, z2), C.siglip_loss(z, z2))
    with pytest.raises(ValueError, match="gradient must be 'ddp'"):
        cd.siglip_loss(z, z2, gradient="sum")
    # the loss features are forwarded
    mrl = {"matryoshka_dims": (4, 2), "matryoshka_weights": (1.0, 0.5)}
    assert torch.equal(cd.info_nce(z, z2, hcl_beta=0.5), C.info_nce(z, z2, hcl_beta=0.5))
    assert torch.equal(cd.clip_loss(z, z2, **mrl), C.clip_loss(z, z2, **mrl))
    assert torch.equal(cd.supcon_loss(z, y, **mrl), C.supcon_loss(z, y, **mrl))
    assert torch.equal(cd.siglip_loss(z, z2, **mrl), C.siglip_loss(z, z2, **mrl))
    feats = {
        "directions": ("query_to_doc", "query_to_query"),
        "hardness_mode": "all_negatives",
        "hardness_strength": 1.0,
    }
    assert torch.equal(cd.retrieval_loss(z, z2, **feats), C.retrieval_loss(z, z2, **feats))
    with pytest.raises(ValueError, match="hcl_beta and matryoshka_dims"):
        cd.clip_loss(z, z2, hcl_beta=0.5, **mrl)
