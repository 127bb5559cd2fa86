"""The gradcheck tool: every row passes, and a failure makes the command exit non-zero."""

import numpy as np
import pytest

from contrastive import cli, gradcheck


def test_gradcheck_command_passes(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "checks passed" in out
    for name in ("contrastive_loss", "info_nce", "clip_loss", "cosine_similarity"):
        assert name in out


def test_gradcheck_exits_nonzero_on_failure(monkeypatch, capsys):
    monkeypatch.setitem(gradcheck.TOLERANCE, "float32", 0.0)  # nothing is exact in float32
    assert cli.main(["gradcheck", "--dtype", "float32"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    from contrastive.reference import contrastive_loss as ref

    good = ref.grad
    monkeypatch.setattr(ref, "grad", lambda *a, **k: tuple(1.01 * g for g in good(*a, **k)))
    row = gradcheck.check_reference(gradcheck.ContrastiveCase())
    assert not row.ok


def test_central_differences_on_a_quadratic():
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(
        gradcheck.central_differences(lambda v: float((v**2).sum()), x), 2 * x, rtol=1e-8
    )


@pytest.mark.parametrize("seed", ["-1", "x"])
def test_gradcheck_bad_seed_is_a_usage_error(seed, capsys):
    """--seed -1 used to end in NumPy's traceback; now argparse's one-line usage error."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["gradcheck", "--seed", seed])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: must be an integer >= 0" in err and "Traceback" not in err
