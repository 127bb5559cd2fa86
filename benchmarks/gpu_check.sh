#!/usr/bin/env bash
# make gpu-check: the GPU proof in one command (see benchmarks/gpu_check.py for the stages).
# Chooses the Python ($GPU_CHECK_PYTHON, else .venv/bin/python when it has torch, else python3:
# on the lent GPU machine the image's python3 already holds torch and Triton), installs the
# wheels carried in .whl/ (make gpu-wheels) into a scratch folder, puts src/ first on the path.
set -u
cd "$(dirname "$0")/.."
PY="${GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
SITE="${TMPDIR:-/tmp}/contrastive-gpu-site"
EXTRA=""
if compgen -G ".whl/*.whl" > /dev/null; then
  echo "installing the carried wheels: $(cd .whl && ls *.whl | tr '\n' ' ')"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    EXTRA="$SITE"
  else
    echo "installing .whl/ failed: going on without those packages"
  fi
fi
export PYTHONPATH="$PWD/src${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
