"""ops/cosine_similarity.py: the cosine similarity under a map M, a full symmetric A and a packed
A, values and analytic gradients against the NumPy reference and gradcheck, and the plain form
against torch. Bad input (the validation in contrastive.functional) is tested in tests/test_functional.py."""

import numpy as np
import torch

import contrastive as C
from contrastive.reference import cosine_similarity as ref_cs


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def test_cosine_map_matches_reference_and_gradcheck(rng):
    x, y, M = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)), rng.normal(size=(3, 4))
    Mt = t64(M, True)
    s = C.cosine_similarity(t64(x), t64(y), M=Mt)
    np.testing.assert_allclose(s.detach().numpy(), ref_cs.sim_map(x, y, M), rtol=1e-12)
    s.sum().backward()
    np.testing.assert_allclose(Mt.grad.numpy(), ref_cs.grad_map(x, y, M), rtol=1e-10, atol=1e-13)
    X, Y = t64(x, True), t64(y, True)
    assert torch.autograd.gradcheck(lambda a, b, m: C.cosine_similarity(a, b, M=m), (X, Y, t64(M, True)))


def test_cosine_sym_full_and_packed(rng):
    d = 4
    x, y = rng.normal(size=(7, d)), rng.normal(size=(7, d))
    R = rng.normal(size=(d, d))
    A = R @ R.T + np.eye(d)
    At = t64(A, True)
    s = C.cosine_similarity(t64(x), t64(y), A=At)
    np.testing.assert_allclose(s.detach().numpy(), ref_cs.sim_sym(x, y, A), rtol=1e-12)
    s.sum().backward()
    np.testing.assert_allclose(At.grad.numpy(), ref_cs.grad_sym_untied(x, y, A), rtol=1e-10, atol=1e-13)
    iu = np.triu_indices(d)
    a = t64(A[iu], True)
    C.cosine_similarity(t64(x), t64(y), A=a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ref_cs.grad_sym_tied(x, y, A)[iu], rtol=1e-10, atol=1e-13)
    X, Y = t64(x, True), t64(y, True)
    assert torch.autograd.gradcheck(lambda p, q, r: C.cosine_similarity(p, q, A=r), (X, Y, t64(A[iu], True)))
    # full A: entries are independent, but A must stay symmetric to sqrt(eps) (1.5e-8) of its
    # largest entry, so perturb by less than that
    assert torch.autograd.gradcheck(
        lambda p, q, r: C.cosine_similarity(p, q, A=r), (X, Y, t64(A, True)), eps=1e-9
    )


def test_cosine_plain_matches_torch(rng):
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(C.cosine_similarity(x, y), torch.nn.functional.cosine_similarity(x, y))
