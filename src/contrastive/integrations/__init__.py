"""Drop-in losses for the places people already train embedding models.

Each submodule imports its peer package lazily (only when the submodule itself is imported),
or not at all, so ``import contrastive`` and ``import contrastive.integrations`` import none
of them:

- :mod:`contrastive.integrations.sentence_transformers`: sentence-transformers' losses
  (``pip install "contrastive[sentence-transformers]"``).
- :mod:`contrastive.integrations.open_clip`: open_clip's ``ClipLoss`` and ``SigLipLoss``
  (imports nothing from open_clip; no extra needed).
- :mod:`contrastive.integrations.pytorch_metric_learning`: pytorch-metric-learning's
  ``NTXentLoss`` and ``SupConLoss`` (imports nothing from it; no extra needed).
"""
