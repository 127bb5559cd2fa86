"""torch.autograd.Function glue: each objective's forward and its analytic backward.

The public, validated entry points are in :mod:`contrastive.functional`; these ops assume
validated inputs. Half-precision inputs are computed in float32 (``compute_dtype``).
"""
import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
