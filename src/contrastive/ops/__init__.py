"""torch.autograd.Function glue: each objective's forward and its analytic backward.

The public, validated entry points are in :mod:`contrastive.functional`; these ops assume
validated inputs. Half-precision inputs are computed in float32 (``compute_dtype``).
"""

from .common import compute_dtype

__all__ = ["compute_dtype"]
