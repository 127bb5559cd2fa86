"""The functional API, the one public home of every loss function: the margin contrastive
loss, InfoNCE / NT-Xent, the two-tower (CLIP) loss, cosine similarity, supervised
contrastive, retrieval with hard negatives and SigLIP, each validated, with its analytic
gradient as backward. The blockwise objectives run on the engine contract of
:mod:`contrastive.ops.engine` (O(N d + block_size^2) memory, no N x N tensor); their
global-batch forms are in :mod:`contrastive.distributed`.

Conventions: embeddings are ``(N, d)``; two views are ``loss(z1, z2)``; explicit pairs are
``loss(u, v, y)`` with ``y = 1`` meaning *similar*; ``reduction`` is ``'mean' | 'sum' |
'none'``. Half-precision inputs are computed in float32 and the result cast back.
"""

from __future__ import annotations

from ._info_nce import clip_loss, info_nce, nt_xent
from ._pairs import contrastive_loss, cosine_similarity
from ._retrieval import retrieval_loss
from ._siglip import siglip_loss
from ._supcon import supcon_loss

__all__ = [
    "contrastive_loss",
    "info_nce",
    "nt_xent",
    "clip_loss",
    "cosine_similarity",
    "supcon_loss",
    "retrieval_loss",
    "siglip_loss",
]
