#!/usr/bin/env bash
# make gpu-wheels: download the packages that the lent GPU machine lacks into .whl/ (git-ignored),
# as wheels for its Python 3.12 on x86-64 Linux; name .whl in the device tool's carry and
# benchmarks/gpu_check.sh installs them there. inf-cl (pure Python, needs numpy and triton, which
# the machine has) is the Inf-CL provider of the benchmark; nothing else is missing there.
set -eu
cd "$(dirname "$0")/.."
PY="${GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl inf-cl==1.2.1
ls -l .whl
