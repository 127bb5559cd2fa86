"""contrastive: contrastive objectives for training embedding models.

Every objective has a NumPy float64 reference (:mod:`contrastive.reference`), a torch op
whose backward is the analytic gradient derived in ``docs/derivations/`` (one document per
objective; its index names each objective's paper), and a validated public function here.
See the README for a quickstart.
"""

from .functional import (
    clip_loss,
    contrastive_loss,
    cosine_similarity,
    info_nce,
    nt_xent,
    retrieval_loss,
    siglip_loss,
    supcon_loss,
)
from .gradcache import GradCache
from .losses import (
    ClipLoss,
    ContrastiveLoss,
    CosineMetric,
    InfoNCELoss,
    NTXentLoss,
    RetrievalLoss,
    SigLIPLoss,
    SupConLoss,
)

__version__ = "0.1.0"

__all__ = [
    "clip_loss",
    "contrastive_loss",
    "cosine_similarity",
    "info_nce",
    "nt_xent",
    "retrieval_loss",
    "siglip_loss",
    "supcon_loss",
    "ClipLoss",
    "ContrastiveLoss",
    "CosineMetric",
    "InfoNCELoss",
    "NTXentLoss",
    "GradCache",
    "RetrievalLoss",
    "SigLIPLoss",
    "SupConLoss",
]
