"""The torch engine on CUDA with half-precision inputs runs its GEMMs on tensor cores (issue 16).

A dispatch mode records every matrix product (aten mm / addmm / bmm / baddbmm, any overload)
of one forward+backward with its operand dtype and flops. On CUDA, at least 90 % of the GEMM
flops must run on tensor cores: bfloat16/float16 operands (accumulating and writing float32),
or float32 operands while TF32 is allowed for that call; not operands upcast to full float32,
which run an order of magnitude slower on Hopper. This is the acceptance test of the engine's
tensor-core path (issue 16): it fails on a GPU for as long as ``ops/gemm.py`` upcasts. Accuracy against float64
is checked in test_cuda_info_nce.py and test_cuda_objectives.py. In the dry run only the
recorder itself is exercised (on CPU the engine computes in float32 by design).
"""

import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import contrastive as C

from ._util import ON_GPU, pick, randn

pytestmark = pytest.mark.cuda

GEMM = re.compile(r"^(add)?b?mm_?$|^baddbmm_?$|^_scaled_mm$")


class GemmRecorder(TorchDispatchMode):
    """Records (operand dtype, flops) of every matrix product dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if GEMM.match(name):
            a, b = (args[0], args[1]) if name in ("mm", "bmm", "_scaled_mm") else (args[1], args[2])
            flops = 2 * a.numel() * b.shape[-1]  # 2 m k n (times the batch)
            tf32 = a.dtype == b.dtype == torch.float32 and a.is_cuda and torch.backends.cuda.matmul.allow_tf32
            self.calls.append((a.dtype, b.dtype, flops, tf32))
        return func(*args, **kwargs)

    def tensor_core_fraction(self) -> float:
        """Share of the flops with half-precision operands, or float32 ones under TF32."""
        half = (torch.bfloat16, torch.float16)
        total = sum(f for _, _, f, _ in self.calls)
        return sum(f for x, y, f, tf32 in self.calls if (x in half and y in half) or tf32) / max(total, 1)


def _objectives(N, d, dtype, device):
    a, b = (randn((N, d), torch.float64, device, s).to(dtype).requires_grad_() for s in (1, 2))
    labels = torch.arange(N, device=device) // 4
    return {
        "info_nce": lambda: C.info_nce(a, b, 0.1, backend="torch"),
        "clip_loss": lambda: C.clip_loss(a, b, 0.1, backend="torch"),
        "supcon_loss": lambda: C.supcon_loss(a, labels, 0.1),
        "siglip_loss": lambda: C.siglip_loss(a, b, 0.1, -10.0),
        "retrieval_loss": lambda: C.retrieval_loss(a, b, b[: N // 2].detach(), 0.05),
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["info_nce", "clip_loss", "supcon_loss", "siglip_loss", "retrieval_loss"])
def test_engine_gemms_take_half_precision_operands(device, dtype, name):
    N, d = pick(8192, 32), pick(128, 16)
    fn = _objectives(N, d, dtype, device)[name]
    with GemmRecorder() as rec:
        loss = fn()
        loss.backward()
    assert rec.calls, "no matrix product recorded: the recorder missed the engine's GEMMs"
    assert torch.isfinite(loss.float())
    if ON_GPU:
        frac = rec.tensor_core_fraction()
        assert frac >= 0.9, (
            f"{name}: only {100 * frac:.1f} % of the GEMM flops run on tensor cores "
            f"(operand dtypes seen: {sorted({str(x) for x, *_ in rec.calls})})"
        )


def test_recorder_weighs_gemms_by_flops(device):
    a = torch.ones(64, 32, dtype=torch.bfloat16, device=device)
    b = torch.ones(32, 16, dtype=torch.bfloat16, device=device)
    out = torch.zeros(64, 16, device=device)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 product: no TF32
    try:
        with GemmRecorder() as rec:
            torch.mm(a, b)  # 2 * 64 * 32 * 16 flops, bf16
            out.addmm_(a.float(), b.float())  # the same flops in float32
            torch.addmv(out[:, 0], a.float(), b.float()[:, 0])  # not a GEMM
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    assert [f for _, _, f, _ in rec.calls] == [2 * 64 * 32 * 16] * 2
    assert rec.tensor_core_fraction() == 0.5
