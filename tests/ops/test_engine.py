"""ops/engine.py, the engine contract: the objectives of scaled rows equal those of unit rows
over the whole finite range, 'auto' takes the torch engine for objectives without a kernel,
and no N x N tensor is ever made. The normalisation itself is tested in test_common.py."""

import pytest
import torch

import contrastive as C
from contrastive.ops.engine import run
from contrastive.ops.info_nce import info_nce_objective
from contrastive.ops.pair_nce import pair_nce_objective
from contrastive.ops.retrieval import clip_objective

from .. import oracles

SCALES = (1e-30, 1e-20, 1e20, 1e30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_info_nce_and_clip_of_scaled_rows_equal_unit_rows(dtype, scale):
    """The engine (validation bypassed: the zero-norm check is not this module's) at 1e+-30."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, dtype=torch.float64, generator=g)
    y = torch.randn(8, 4, dtype=torch.float64, generator=g)
    # float64: the project's 1e-10 (scaling by a non-power of two rounds every entry)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=0)
    for build, ins in ((info_nce_objective(True, False, 3), [x]), (clip_objective(3), [x, y])):
        u0 = [v.to(dtype).detach().clone().requires_grad_(True) for v in ins]
        base = run(build, u0, 0.1)
        base.backward()
        us = [(v * scale).to(dtype).detach().requires_grad_(True) for v in ins]
        out = run(build, us, 0.1)
        out.backward()
        torch.testing.assert_close(out.double(), base.double(), **tol)
        for a, b in zip(us, u0):  # grad_u scales as 1 / |u|
            torch.testing.assert_close(a.grad.double() * scale, b.grad.double(), **tol)


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_public_info_nce_of_huge_rows(scale):
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(
        C.info_nce(z1 * scale, z2 * scale, 0.2), C.info_nce(z1, z2, 0.2), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        C.clip_loss(z1 * scale, z2, 0.2), C.clip_loss(z1, z2, 0.2), rtol=1e-5, atol=1e-6
    )


def test_auto_takes_the_torch_engine_for_objectives_without_a_kernel(monkeypatch):
    """Simulate CUDA tensors with Triton installed: 'auto' would resolve to 'triton'. Objectives
    without a kernel (DCL, SupCon, retrieval, SigLIP) must still run the torch engine."""
    import contrastive.kernels.dispatch as dispatch

    monkeypatch.setattr(
        dispatch, "choose_backend", lambda backend, *t: "triton" if backend == "auto" else backend
    )
    z1, z2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    want = oracles.info_nce(z1, z2, 0.5, decoupled=True)
    torch.testing.assert_close(C.info_nce(z1, z2, decoupled=True), want, rtol=1e-12, atol=0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.isfinite(C.supcon_loss(torch.cat([z1, z2]), y))
    assert torch.isfinite(C.retrieval_loss(z1, z2, None))
    assert torch.isfinite(C.siglip_loss(z1, z2))


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


ALL4 = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
FEATURES = ["gte_hardness", "gte_per_direction", "hcl_retrieval", "gist", "hcl_info_nce", "hcl_clip"]
NO_MRL = ("pair_nce", "hcl_info_nce", "hcl_clip")  # refuse matryoshka_dims or do not take it


@pytest.mark.parametrize("mrl", [None, (3, 1, 4, 2)])
@pytest.mark.parametrize(
    "name", ["info_nce", "decoupled", "clip", "supcon", "retrieval", "siglip", "pair_nce", *FEATURES]
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_n_by_n_tensor_is_ever_made(name, reduction, mrl):
    """N = 256 rows, tiles of 16: every tensor stays O(N d + tile^2), far below N^2, with
    Matryoshka prefixes too (``mrl``: every prefix's K vectors are (K, N))."""
    if mrl is not None and name in NO_MRL:
        pytest.skip(f"{name} takes no matryoshka_dims")
    N, d, bs = 256, 4, 16
    kw = dict(matryoshka_dims=mrl)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(N, 2, d, generator=g, dtype=torch.float64, requires_grad=True)
    calls = {
        "info_nce": lambda: C.info_nce(x, y, 0.1, reduction=reduction, block_size=bs, **kw),
        "decoupled": lambda: C.info_nce(x, y, 0.1, reduction=reduction, block_size=bs, decoupled=True, **kw),
        "clip": lambda: C.clip_loss(x, y, 0.1, reduction=reduction, block_size=bs, **kw),
        "supcon": lambda: C.supcon_loss(
            torch.cat([x, y]), torch.arange(2 * N) % 50, reduction=reduction, block_size=bs, **kw
        ),
        "retrieval": lambda: C.retrieval_loss(
            x,
            y,
            n,
            0.1,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            positive_ids=torch.arange(N) % 100,
            reduction=reduction,
            block_size=bs,
            **kw,
        ),
        "siglip": lambda: C.siglip_loss(x, y, reduction=reduction, block_size=bs, **kw),
        "pair_nce": lambda: run(
            pair_nce_objective(torch.arange(2 * N) % 50, bs), [torch.cat([x, y])], 0.1, reduction=reduction
        ),
        # issue 25's features: every direction, hardness, HCL, GIST's guide masks
        "gte_hardness": lambda: C.retrieval_loss(
            x,
            y,
            n,
            0.1,
            directions=ALL4,
            hardness_mode="all_negatives",
            hardness_strength=2.0,
            positive_ids=torch.arange(N) % 100,
            reduction=reduction,
            block_size=bs,
            **kw,
        ),
        "gte_per_direction": lambda: C.retrieval_loss(
            x,
            y,
            n,
            0.1,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            hardness_mode="in_batch_negatives",
            hardness_strength=1.0,
            reduction=reduction,
            block_size=bs,
            **kw,
        ),
        "hcl_retrieval": lambda: C.retrieval_loss(
            x, y, n, 0.1, hcl_beta=1.0, hcl_tau_plus=0.1, reduction=reduction, block_size=bs, **kw
        ),
        "gist": lambda: C.retrieval_loss(
            x,
            y,
            n,
            0.1,
            guide=(x.detach() + 0.5, y.detach() - 0.5, n.detach() * 2),
            guide_margin=0.05,
            contrast_anchors=True,
            contrast_positives=True,
            reduction=reduction,
            block_size=bs,
            **kw,
        ),
        "hcl_info_nce": lambda: C.info_nce(x, y, 0.1, hcl_beta=1.0, reduction=reduction, block_size=bs),
        "hcl_clip": lambda: C.clip_loss(
            x, y, 0.1, hcl_beta=1.0, hcl_tau_plus=0.1, reduction=reduction, block_size=bs
        ),
    }
    with _LargestTensor() as mode:
        out = calls[name]()
        (out.sum() if reduction == "none" else out).backward()
    assert mode.largest <= 4 * N * d, f"{name}: a tensor of {mode.largest} elements (N^2 = {N * N})"


class _LargeStorages(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every distinct storage of at least ``limit`` bytes that an op produces."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.made = limit, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() >= self.limit:
                self.made.setdefault(t.untyped_storage().data_ptr(), str(func))
        return out


@pytest.mark.parametrize(
    "name, want",
    [
        ("info_nce", 1),
        ("supcon", 1),
        ("none", 1),
        ("clip", 2),
        ("retrieval", 2),
        ("siglip", 2),
        ("pair_nce", 1),
    ],
)
def test_the_loss_holds_only_its_gradients_beyond_the_inputs(name, want):
    """N = 16384 rows (four of the helpers' 4096-row blocks): forward and backward together
    make no (N, d)-sized tensor except one gradient per input; the normalised rows, the
    compute-dtype rows, the positives and the input checks are made a block at a time."""
    N, d = 16384, 32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g, requires_grad=True)
    y = torch.randn(N, d, generator=g, requires_grad=True)
    calls = {
        "info_nce": lambda: C.nt_xent(x, 0.1),
        "supcon": lambda: C.supcon_loss(x, torch.arange(N) % 50),
        "none": lambda: C.nt_xent(x, 0.1, reduction="none").sum(),
        "clip": lambda: C.clip_loss(x, y),
        "retrieval": lambda: C.retrieval_loss(
            x, y, None, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        ),
        "siglip": lambda: C.siglip_loss(x, y),
        "pair_nce": lambda: run(pair_nce_objective(torch.arange(N) % 50, 512), [x], 0.1),
    }
    with _LargeStorages(N * d * 4 * 3 // 4) as mode:
        calls[name]().backward()
    for t in (x, y):
        mode.made.pop(t.untyped_storage().data_ptr(), None)
    assert len(mode.made) == want, f"{name}: (N, d)-sized tensors made by {sorted(mode.made.values())}"


def test_largest_tensor_probe_sees_the_dense_path():
    """The probe above can fail: the dense reference path holds the N x N logits."""
    N = 256
    x = torch.randn(N, 4, dtype=torch.float64, requires_grad=True)
    with _LargestTensor() as mode:
        C.info_nce(x, x.flip(0), 0.1, backend="dense").backward()
    assert mode.largest >= (2 * N) ** 2
