"""Drop-in losses for the places people already train embedding models.

Each submodule imports its peer package lazily (only when the submodule itself is imported),
so ``import contrastive`` and ``import contrastive.integrations`` import none of them:

- :mod:`contrastive.integrations.sentence_transformers`: sentence-transformers' losses
  (``pip install "contrastive[sentence-transformers]"``).
"""
