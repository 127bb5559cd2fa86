import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Tier markers (slow, multiprocess, triton, cuda) from the table in ``tests/markers.py``."""
    from .markers import apply_markers

    apply_markers(items, config.rootpath)
