"""Testing tier 4 on a GPU: the CUDA correctness tests that ``make gpu-check`` runs (``-m cuda``).

Without CUDA every test here skips, unless ``CONTRASTIVE_GPU_CHECK_DRY_RUN=1`` (set by the
check's dry run, ``benchmarks/gpu_check.py --dry-run``): then they run on CPU at tiny sizes,
the Triton kernels under the interpreter, so that the check and these tests cannot rot on
machines without a GPU. Sizes come from ``pick(gpu_value, dry_value)``.
"""

import pytest
import torch

from ._util import DRY_RUN, ON_GPU


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cuda: CUDA correctness test run by make gpu-check; skipped without CUDA "
        "(CONTRASTIVE_GPU_CHECK_DRY_RUN=1 runs it on CPU at tiny sizes)",
    )


@pytest.fixture
def device(monkeypatch):
    """cuda on a GPU; cpu with the Triton interpreter in the dry run; else skip."""
    if ON_GPU:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        return torch.device("cuda")
    if DRY_RUN:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        return torch.device("cpu")
    pytest.skip("needs a CUDA device: make gpu-check (CONTRASTIVE_GPU_CHECK_DRY_RUN=1 runs it on CPU)")


@pytest.fixture
def gpu_only():
    """Skip in the dry run: for properties of the CUDA code path itself (tensor cores)."""
    if not ON_GPU:
        pytest.skip("a property of the CUDA path; nothing to check on CPU")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """In the dry run, lift the blanket "no CUDA, skip" that the tier markers put on every
    ``cuda`` test: these tests then run on CPU (the ``device`` fixture decides)."""
    if not DRY_RUN:
        return
    here = str(config.rootpath / "tests" / "cuda")
    for item in items:
        if str(item.path).startswith(here):
            item.own_markers[:] = [m for m in item.own_markers if m.name != "skip"]
