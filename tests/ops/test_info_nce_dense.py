"""ops/info_nce_dense.py: DenseInfoNCEFn, the dense path (rung 2 of the verification ladder)
and the reference the blockwise engine is checked against in test_info_nce.py. Here it is
checked itself: values, analytic input and temperature gradients against the NumPy float64
reference (1e-10, non-uniform weights), torch.autograd.gradcheck, and its dtypes."""

import numpy as np
import pytest
import torch

from contrastive.ops.info_nce_dense import DenseInfoNCEFn
from contrastive.reference import info_nce as ref


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 5.0])
def test_values_and_gradients_equal_the_reference(exclude_self, normalize, temperature):
    rng = np.random.default_rng(11)
    z = rng.normal(size=(10, 4)) * (1.0 if normalize else 0.4)
    w = rng.uniform(0.5, 1.5, size=10)  # the upstream gradient of reduction='none'
    u = torch.tensor(z, requires_grad=True)
    t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    out = DenseInfoNCEFn.apply(u, t, exclude_self, normalize)
    want = ref.forward(z, temperature, exclude_self=exclude_self, normalize=normalize)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-10, atol=1e-10)
    (out * torch.from_numpy(w)).sum().backward()
    gz, gt = ref.grad(z, temperature, exclude_self=exclude_self, normalize=normalize, weights=w)
    np.testing.assert_allclose(u.grad.numpy(), gz, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(t.grad.item(), gt, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_gradcheck(exclude_self):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: DenseInfoNCEFn.apply(a, b, exclude_self, True), (u, t))


def test_float_temperature_has_no_gradient_and_dtypes():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(8, 3, generator=g, dtype=torch.bfloat16, requires_grad=True)
    out = DenseInfoNCEFn.apply(u, 0.2, True, True)
    assert out.dtype == torch.float32  # the compute dtype: half precision accumulates in float32
    out.sum().backward()
    assert u.grad.dtype == torch.bfloat16
    ref64 = DenseInfoNCEFn.apply(u.detach().double(), 0.2, True, True)
    torch.testing.assert_close(out.double(), ref64, rtol=2e-2, atol=2e-2)
