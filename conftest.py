"""Doctest collection (``--doctest-modules`` over ``src/contrastive``): the integration modules
import their optional peer package, so they are skipped where that package is not installed."""

import importlib.util

_OPTIONAL = {"src/contrastive/integrations/sentence_transformers/*": "sentence_transformers"}

collect_ignore_glob = [
    path for path, package in _OPTIONAL.items() if importlib.util.find_spec(package) is None
]
