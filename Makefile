# The README's two commands. Each builds .venv when it is missing, installs torch 2.13.0
# first (when .venv has no torch yet), then the package, then open-clip-torch without its
# dependencies (the open_clip integration's tests read its loss.py). Which build of torch comes is the
# index's choice: from PyPI on Linux that is the CUDA build (gigabytes, with its CUDA
# packages); for the CPU build name PyTorch's CPU index:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (or .../whl/cu126 etc. for a given CUDA). TORCH_SPEC picks another version.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.contrastive-installed

.PHONY: test demo install clean bench gpu-check gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	# open_clip's loss.py, which tests/integrations/test_open_clip.py compares against; --no-deps:
	# its dependencies (torchvision, timm, ...) would replace the CPU torch with a CUDA build
	$(PY) -m pip install --no-deps open-clip-torch==3.3.0
	touch $(STAMP)

install: $(STAMP)

# Everything: doctests, multi-process, Triton-interpreter and slow tests (CI runs this).
test: $(STAMP)
	$(PY) -m pytest -q

.PHONY: test-fast lint docs

# The fast tier for development (under a minute on two cores): no slow, multi-process or
# Triton-interpreter tests. Markers: pyproject.toml; which tests carry them: tests/conftest.py.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not multiprocess and not triton"

# ruff (rules in pyproject.toml, see CONTRIBUTING.md), the formatter's check, mypy on the public surface.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml) into site/; --strict turns a broken reference into an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The demo trains SimCLR on the embedded digits (runs/demo/). Passive OpenMP waiting keeps
# torch's threads from spinning when other jobs share the cores (up to 10x slower otherwise).
demo: $(STAMP)
	$(VENV)/bin/contrastive gradcheck
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/contrastive train simclr --run.name=demo --run.overwrite=true

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis

# The GPU proof (docs/gpu.md): on a CUDA machine, within ~8 minutes, versions, the CUDA tests,
# the accuracy table and the benchmark, all under benchmarks/results/gpu_check/ (and packed into
# $OUT when set). Needs no .venv: on the lent GPU machine python3 already has torch and Triton.
# Without CUDA it says so and runs the same stages as a dry run on CPU.
gpu-check:
	bash benchmarks/gpu_check.sh

# Wheels the GPU machine lacks (inf-cl), downloaded here into .whl/ for the device tool's carry.
gpu-wheels:
	bash benchmarks/gpu_wheels.sh
