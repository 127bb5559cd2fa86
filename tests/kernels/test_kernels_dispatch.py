"""The backend rule, and that Triton stays an optional, lazily imported dependency."""

import subprocess
import sys

import pytest
import torch

from contrastive.kernels import available, triton_installed
from contrastive.kernels.dispatch import choose_backend, interpret_enabled


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_contrastive_never_imports_triton():
    r = run_python(
        "import sys, contrastive, contrastive.kernels, contrastive.kernels.dispatch, "
        "contrastive.kernels.host\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "print('ok')"
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_kernel_modules_import_without_triton():
    # a missing Triton must leave every module importable (doctest collection) and only the
    # calls fail, with the install hint
    r = run_python(
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import torch, contrastive.kernels._device, contrastive.kernels.host as m\n"
        "from contrastive.kernels import available, triton_installed\n"
        "assert not available()\n"
        "try:\n"
        "    m._device_module(True)\n"
        "except ImportError as e:\n"
        "    assert 'contrastive[triton]' in str(e)\n"
        "    print('ok')\n"
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_auto_takes_torch_for_cpu_tensors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter is for tests only
    assert choose_backend("auto", torch.zeros(4, 3)) == "torch"
    assert choose_backend("torch", torch.zeros(4, 3)) == "torch"
    assert choose_backend("dense", torch.zeros(4, 3)) == "dense"  # passed through
    assert choose_backend("auto") == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_takes_triton_for_cuda_tensors_when_installed():
    x = torch.zeros(4, 3, device="cuda")
    expected = "triton" if triton_installed() else "torch"
    assert choose_backend("auto", x, x) == expected
    assert choose_backend("auto", x.double()) == "torch"  # float64: the torch engine


def test_explicit_triton_validates(monkeypatch):
    if not triton_installed():
        with pytest.raises(ValueError, match="contrastive\\[triton\\]"):
            choose_backend("triton", torch.zeros(2, 2))
        return
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            choose_backend("triton", torch.zeros(2, 2))
    with pytest.raises(TypeError, match="float64"):
        choose_backend("triton", torch.zeros(2, 2, dtype=torch.float64))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_backend("triton", torch.zeros(2, 2)) == "triton"


def test_available(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert available() == (torch.cuda.is_available() and triton_installed())
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert available() == triton_installed()


@pytest.mark.parametrize(
    "value, expected", [("1", True), (" On ", True), ("yes", True), ("0", False), ("", False)]
)
def test_interpret_enabled_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpret_enabled() is expected
