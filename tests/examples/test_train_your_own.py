"""examples/train_your_own.py: a user's own encoder trained with supcon_loss through the loop."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_your_own.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_your_own", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_example_is_short():
    assert len(EXAMPLE.read_text().splitlines()) < 80


@pytest.mark.slow
def test_the_example_trains_and_beats_its_initialisation(tmp_path, capsys):
    summary = _load().main(["--epochs", "8", "--root", str(tmp_path)])
    run = tmp_path / "digits-supcon"
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.pt").is_file()
    saved = json.loads((run / "summary.json").read_text())
    before = saved["baselines"]["random encoder"]["knn_accuracy"]
    after = summary["trained"]["knn_accuracy"]
    assert after > before + 2, (before, after)
    assert "trained encoder (epoch 8)" in capsys.readouterr().out
