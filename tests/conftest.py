import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def naive_info_nce(z, temperature, exclude_self=True, normalize=True):
    """Plain autograd InfoNCE per-row losses on stacked z (N, d): the test oracle."""
    if normalize:
        z = torch.nn.functional.normalize(z, dim=1)
    N = z.shape[0]
    S = z @ z.T / temperature
    if exclude_self:
        S = S.masked_fill(torch.eye(N, dtype=torch.bool, device=z.device), float("-inf"))
    p = (torch.arange(N, device=z.device) + N // 2) % N
    return torch.logsumexp(S, 1) - S[torch.arange(N), p]


def naive_clip(a, b, temperature, normalize=True):
    if normalize:
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
    S = a @ b.T / temperature
    d = torch.diagonal(S)
    return 0.5 * ((torch.logsumexp(S, 1) - d) + (torch.logsumexp(S, 0) - d))


def pytest_collection_modifyitems(config, items):
    """Tier markers (slow, multiprocess, triton, cuda) from the table in ``tests/markers.py``."""
    from .markers import apply_markers

    apply_markers(items, config.rootpath)
