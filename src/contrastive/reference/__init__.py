"""NumPy float64 oracles: each objective's formula, forward and analytic gradient.

These modules import no torch. They are written to mirror the derivations (docs/derivations/) line by
line (the formula sits in a comment beside the code) and are checked against central
finite differences in the test suite; the torch ops are then checked against them.
"""

from . import (
    contrastive_loss,
    cosine_similarity,
    info_nce,
    pair_nce,
    retrieval_loss,
    siglip_loss,
    supcon_loss,
)

__all__ = [
    "contrastive_loss",
    "cosine_similarity",
    "info_nce",
    "pair_nce",
    "retrieval_loss",
    "siglip_loss",
    "supcon_loss",
]
