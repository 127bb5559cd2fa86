"""backend='triton' through the public functions (ops/triton_glue.py, the Triton back-end of the
engine contract), under the Triton interpreter on CPU: values and gradients (embeddings and a
learnable temperature) equal the torch engine's."""

import pytest
import torch

import contrastive as C

pytest.importorskip("triton")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _run(fn, tensors, t, reduction, w):
    xs = [x.clone().requires_grad_(True) for x in tensors]
    tt = t.clone().requires_grad_(True)
    out = fn(*xs, tt, reduction)
    (out * w).sum().backward() if reduction == "none" else (3 * out).backward()
    return [out.detach()] + [x.grad for x in xs] + [tt.grad]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_info_nce_triton_equals_torch(interpret, reduction, exclude_self):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    t, w = torch.tensor(0.3), torch.rand(20, generator=g)
    res = {
        b: _run(
            lambda a, c, tt, r, b=b: C.info_nce(a, c, tt, exclude_self=exclude_self, reduction=r, backend=b),
            (z1, z2),
            t,
            reduction,
            w,
        )
        for b in ("triton", "torch")
    }
    for x, y in zip(res["triton"], res["torch"]):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_clip_triton_equals_torch(interpret, reduction):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 16, generator=g), torch.randn(9, 16, generator=g)
    t, w = torch.tensor(0.1), torch.rand(9, generator=g)
    res = {
        k: _run(
            lambda x, y, tt, r, k=k: C.clip_loss(x, y, tt, reduction=r, backend=k), (a, b), t, reduction, w
        )
        for k in ("triton", "torch")
    }
    for x, y in zip(res["triton"], res["torch"]):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_triton_backend_rejects_float64(interpret):
    with pytest.raises(TypeError):
        C.info_nce(
            torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), backend="triton"
        )


def test_auto_on_cpu_is_the_torch_engine(interpret):
    z = torch.randn(6, 8)
    torch.testing.assert_close(C.nt_xent(z, backend="auto"), C.nt_xent(z, backend="torch"))
