"""Which tests are slow, multi-process, Triton-interpreter or CUDA: one table, applied by
``pytest_collection_modifyitems`` in ``tests/conftest.py``.

``make test`` runs every test; ``make test-fast`` deselects ``slow``, ``multiprocess`` and
``triton`` (``pytest -m "not slow and not multiprocess and not triton"``). The markers are
registered in ``pyproject.toml``. A marker comes from, in order:

1. ``MARKED``: test ids (``fnmatch`` patterns on the node id, parameters included) that
   carry a marker. ``slow`` lists the tests measured at about a second or more on two cores
   (``pytest --durations=0``);
2. rules that keep new tests in the right tier without editing this table: a test module that
   ``pytest.importorskip("triton")`` is ``triton``; a test whose source starts distributed
   workers (``spawn(``, ``torchrun``, ``torch.distributed.run``, ``start_processes``) is
   ``multiprocess``; a test parametrised with the device ``"cuda"`` is ``cuda``;
3. ``@pytest.mark.<name>`` written on the test itself.

A ``cuda`` test is skipped when no CUDA device is present.
"""

from __future__ import annotations

import fnmatch
import inspect
from functools import cache
from pathlib import Path

import pytest
import torch

MARKED: dict[str, list[str]] = {
    "slow": [
        "tests/integrations/test_sentence_transformers.py::test_trainer_trains_three_steps_and_saves_a_loadable_model",
        "tests/kernels/test_kernels_bench_gpu.py::*",  # runs the benchmark script in a subprocess
        "tests/kernels/test_kernels_dispatch.py::test_importing_contrastive_never_imports_triton",
        "tests/kernels/test_kernels_dispatch.py::test_kernel_modules_import_without_triton",
        "tests/metric/test_metric_estimator_checks.py::*",  # scikit-learn's whole estimator battery
        "tests/metric/test_metric_learner.py::test_deterministic",
        "tests/metric/test_metric_objective.py::test_solvers_decrease_the_objective*",
        "tests/metric/test_metric_objective.py::test_fitted_symmetric_metric_is_positive_definite*",
        "tests/train/test_augment.py::test_seeded_views_are_reproducible*",
        "tests/train/test_simclr.py::test_one_epoch_smoke_eval_and_embed",  # training runs
        "tests/train/test_simclr.py::test_resume_*",
        "tests/train/test_simclr.py::test_cifar_resnet_lars_from_toml",
        "tests/train/test_simclr.py::test_unlabelled_vectors",
        "tests/train/test_simclr.py::test_non_finite_*",
        "tests/train/test_simclr.py::test_tensorboard_is_optional",
        "tests/train/test_models.py::test_encoder_shapes*",
        "tests/train/test_plots.py::test_plots_write_png",
        "tests/train/test_siamese.py::test_one_epoch_smoke_eval_and_embed",
        "tests/train/test_siamese.py::test_resume_equals_uninterrupted",
        "tests/train/test_siamese.py::test_pair_sources_and_subsets*",
        "tests/train/test_loop.py::*",  # training runs through the shared loop
        "tests/train/test_retrieval.py::*",  # retrieval runs (corpus, tokenizer, mining, training)
        "tests/train/test_retrieval_search.py::*",  # a tiny retrieval run, then searches
        "tests/train/test_retrieval_reliability.py::test_s*",  # tiny retrieval runs, a 3-4 s wait for a missing rank
        "tests/train/test_retrieval_reliability.py::test_t1_*",
        "tests/train/test_retrieval_reliability.py::test_u1_*",
        "tests/train/test_retrieval_reliability.py::test_u2_*",
        "tests/train/test_retrieval_reliability.py::test_u7_*",
        "tests/train/test_retrieval_reliability.py::test_also_batch_*",
        "tests/train/test_retrieval_reliability.py::test_also_unused_*",
        "tests/train/test_retrieval_reliability.py::test_also_embed_*",
        "tests/train/test_retrieval_reliability.py::test_also_run_files_*",
        "tests/train/test_retrieval_reliability.py::test_h1_stray_*",
        "tests/train/test_retrieval_reliability.py::test_hostile_checkpoint_*",
        "tests/train/test_retrieval_reliability.py::test_hostile_damaged_*",
        "tests/train/test_retrieval_reliability.py::test_hostile_unwritable_*",
        "tests/train/test_retrieval_reliability.py::test_hostile_a_lone_*",
        "tests/train/test_retrieval_reliability.py::test_hostile_a_folder_*",
        "tests/train/test_rundir.py::*",  # runs killed, resumed, on a full or read-only disk
        "tests/train/text/test_*.py::*",  # builds a corpus from the standard library, fits BM25, trains encoders
        "tests/test_bench_gradcache.py::*",  # runs the benchmark's worker
    ],
    "multiprocess": [],
    "triton": [],
    "cuda": [
        "tests/kernels/test_kernels_dispatch.py::test_auto_takes_triton_for_cuda_tensors_when_installed",
    ],
}

SPAWNS_WORKERS = ("spawn(", "torchrun", "torch.distributed.run", "start_processes")


@cache
def _module_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _function_source(item: pytest.Item) -> str:
    function = getattr(item, "function", None)
    if function is None:
        return ""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def markers_of(item: pytest.Item, rootdir: Path) -> set[str]:
    """The marker names ``item`` gets from ``MARKED`` and the rules above."""
    try:
        nodeid = Path(item.path).relative_to(rootdir).as_posix() + item.nodeid[item.nodeid.index("::") :]
    except ValueError:  # outside the rootdir, or no "::" (never for pytest items)
        nodeid = item.nodeid
    names = {
        name for name, patterns in MARKED.items() if any(fnmatch.fnmatchcase(nodeid, p) for p in patterns)
    }
    path = Path(item.path)
    if path.suffix == ".py" and path.name.startswith("test_"):
        if 'importorskip("triton"' in _module_source(path):
            names.add("triton")
        if any(s in _function_source(item) for s in SPAWNS_WORKERS):
            names.add("multiprocess")
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(str(v) == "cuda" for v in callspec.params.values()):
        names.add("cuda")
    return names


def apply_markers(items: list[pytest.Item], rootdir: Path) -> None:
    """Add the markers of :func:`markers_of` to every item; skip ``cuda`` tests without CUDA."""
    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        for name in sorted(markers_of(item, rootdir)):
            item.add_marker(getattr(pytest.mark, name))
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(no_cuda)
