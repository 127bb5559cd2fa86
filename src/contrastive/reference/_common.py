"""NumPy helpers the float64 references share: unit rows, the normalisation chain rule,
a stable log-sum-exp. Imports no torch."""

import numpy as np


def unit(u, normalize=True):
    """(z, norms): z = u / |u| row by row when ``normalize`` (else u), norms (N, 1)."""
    u = np.asarray(u, dtype=np.float64)
    norms = np.linalg.norm(u, axis=-1, keepdims=True)
    return (u / norms if normalize else u), norms


def chain(grad_z, z, norms, normalize=True):
    """grad_u = (I - z z^T) grad_z / |u| for z = u / |u| (identity without normalisation)."""
    if not normalize:
        return grad_z
    return (grad_z - z * (z * grad_z).sum(axis=-1, keepdims=True)) / norms


def logsumexp(x, axis):
    """log sum exp along ``axis``; rows that are all -inf give -inf."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)
