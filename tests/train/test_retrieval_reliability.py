"""Issue 24 (reliability, round 2): the commands that read a finished retrieval run answer from
what was trained or refuse in one line, and nothing hangs. Each test is named after its finding
(S: silent wrong answer, H: hang, T: traceback, U: unclear message); tiny JSONL runs (~2 s)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import numpy as np
import pytest

from contrastive.cli import main
from contrastive.train.config import apply_overrides
from contrastive.train.recipes.retrieval import RetrievalConfig, RetrievalTask
from contrastive.train.text import corpus as TC

from .test_retrieval import TINY, _pairs, _write_jsonl


def _train(tmp_path, name="r", rows=None, data=None, **more):
    """A finished tiny run ``tmp_path/runs/NAME`` on ``data`` (written from ``rows``)."""
    data = data or _write_jsonl(tmp_path / f"{name}.jsonl", rows or _pairs(120))
    items = {**TINY, "run.root": tmp_path / "runs", "run.name": name, "data.name": "jsonl", "data.path": data}
    items.update(more)
    assert main(["train", "retrieval", *[f"--{k}={v}" for k, v in items.items()]]) == 0
    return tmp_path / "runs" / name, data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("base"))


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the module's run folder (its data file is shared: do not change it)."""
    dst = tmp_path / "copy"
    shutil.copytree(trained[0], dst)
    return dst


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


# -- silent wrong answers ------------------------------------------------------------------
def test_s1_missing_tokenizer_is_refused(run, tmp_path, capsys):
    (run / "tokenizer.json").unlink()
    capsys.readouterr()
    assert main(["search", str(run), "read the file"]) == 3
    assert "tokenizer.json" in _err(capsys)
    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 3
    assert main(["eval", str(run)]) == 3
    assert not (run / "tokenizer.json").exists()  # never re-trained into the run folder


def test_s1_another_tokenizer_is_refused(run, tmp_path, capsys):
    other, _ = _train(tmp_path, "other", _pairs(120, seed=5))
    shutil.copy(other / "tokenizer.json", run / "tokenizer.json")
    capsys.readouterr()
    assert main(["search", str(run), "read the file"]) == 3
    assert "not the tokenizer the run was trained with" in _err(capsys)


def test_s2_changed_data_is_refused_naming_both_hashes(tmp_path, capsys):
    run, data = _train(tmp_path)
    before = TC.hashlib.sha256(data.read_bytes()).hexdigest()
    with open(data, "a") as fh:
        fh.write(json.dumps({"query": "open the socket", "positive": "def op():\n    pass"}) + "\n")
    after = TC.hashlib.sha256(data.read_bytes()).hexdigest()
    capsys.readouterr()
    for cmd in (["eval", str(run)], ["search", str(run), "read"], ["embed", str(run), "--data", "test"]):
        extra = ["--out", str(tmp_path / "e.npy")] if cmd[0] == "embed" else []
        assert main(cmd + extra) == 3
        err = _err(capsys)
        assert before in err and after in err and "--allow-changed-data" in err
    assert main(["eval", str(run), "--allow-changed-data"]) == 0
    assert "changed data" in capsys.readouterr().err
    changed = json.loads((run / "eval.json").read_text())["data_changed"]
    assert changed[0]["recorded"] == before and changed[0]["now"] == after
    # --resume trains on the data it started with, or not at all
    assert main(["train", "retrieval", "--resume", str(run), "--train.epochs=2"]) == 3


def test_s3_embed_side_query_reads_queries(trained, tmp_path):
    run, data = trained
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    texts = tmp_path / "queries.txt"
    texts.write_text("".join(r["query"] + "\n" for r in rows))
    out = {}
    for name, spec in (("pairs", data), ("lines", texts)):
        args = [
            "embed",
            str(run),
            "--data",
            str(spec),
            "--side",
            "query",
            "--out",
            str(tmp_path / f"{name}.npy"),
        ]
        assert main(args) == 0
        out[name] = np.load(tmp_path / f"{name}.npy")
    np.testing.assert_array_equal(out["pairs"], out["lines"])
    only_queries = tmp_path / "q.jsonl"
    only_queries.write_text('{"query": "read the file"}\n{"query": "write a line"}\n')
    assert (
        main(
            [
                "embed",
                str(run),
                "--data",
                str(only_queries),
                "--side",
                "query",
                "--out",
                str(tmp_path / "q.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "q.npy").shape[0] == 2


def test_s4_embed_blank_line_is_refused(trained, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("read a file\nwrite it\n\nsort the list\n   \n")
    capsys.readouterr()
    assert main(["embed", str(trained[0]), "--data", str(texts), "--out", str(tmp_path / "e.npy")]) == 2
    err = _err(capsys)
    assert "line 3 is blank" in err and not (tmp_path / "e.npy").exists()
    texts.write_text("read a file\nwrite it\nsort the list\n")
    assert main(["embed", str(trained[0]), "--data", str(texts), "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape[0] == 3


def test_s5_no_validation_split_selects_the_last_epoch(tmp_path, capsys):
    run, _ = _train(tmp_path, **{"data.validation_fraction": 0.0, "train.epochs": 2, "eval.every": 1})
    out = capsys.readouterr().out
    assert "0 validation" in out and "best.pt by last epoch" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint_by"].startswith("last epoch")
    assert not any(k.startswith("val_") for k in summary["trained"])  # never the test split instead
    assert main(["embed", str(run), "--data", "validation", "--out", str(tmp_path / "e.npy")]) == 2
    assert "no validation split" in _err(capsys)


def test_s5_best_is_chosen_on_validation_when_there_is_one(trained):
    summary = json.loads((trained[0] / "summary.json").read_text())
    assert summary["best_checkpoint_by"] == "validation MRR@10" and "val_mrr_at_10" in summary["trained"]


# -- hang, traceback -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_h1_stray_rank_variables_say_what_they_wait_for(tmp_path, monkeypatch, capsys):
    for k, v in {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }.items():
        monkeypatch.setenv(k, v)
    data = _write_jsonl(tmp_path / "d.jsonl", _pairs(40))
    args = [
        f"--{k}={v}"
        for k, v in {**TINY, "run.root": tmp_path / "runs", "data.name": "jsonl", "data.path": data}.items()
    ]
    t0 = time.perf_counter()
    assert main(["train", "retrieval", *args, "--dist.timeout_s=4"]) == 2
    assert time.perf_counter() - t0 < 60
    err = _err(capsys)
    assert "waiting for 1 more process" in err and "torchrun" in err and "unset RANK" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("retrieval-*"))


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "0", "WORLD_SIZE": "2"},  # no MASTER_ADDR
        {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},  # no RANK
        {"RANK": "5", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
        {"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
    ],
)
def test_h1_incomplete_rank_variables_get_the_same_hint(tmp_path, monkeypatch, capsys, env):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = _write_jsonl(tmp_path / "d.jsonl", _pairs(40))
    args = [
        f"--{k}={v}"
        for k, v in {**TINY, "run.root": tmp_path / "runs", "data.name": "jsonl", "data.path": data}.items()
    ]
    assert main(["train", "retrieval", *args]) == 2
    err = _err(capsys)
    assert "torchrun" in err and "unset RANK" in err, err


def test_t1_corrupt_tokenizer_is_one_line_exit_3(run, capsys):
    (run / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    capsys.readouterr()
    assert main(["search", str(run), "read the file"]) == 3
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and "tokenizer.json" in err


# -- unclear messages ----------------------------------------------------------------------
def test_u1_non_utf8_names_the_file_and_line(tmp_path, capsys):
    data = tmp_path / "latin1.jsonl"
    lines = [json.dumps(r) for r in _pairs(40)]
    lines[6] = lines[6].replace("the", "caf\u00e9 the", 1)
    data.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    args = [
        f"--{k}={v}"
        for k, v in {**TINY, "run.root": tmp_path / "runs", "data.name": "jsonl", "data.path": data}.items()
    ]
    assert main(["train", "retrieval", *args]) == 3
    err = _err(capsys)
    assert "latin1.jsonl" in err and "line 7" in err and "UTF-8" in err
    texts = tmp_path / "t.txt"
    texts.write_bytes(b"fine\nna\xefve\n")
    with pytest.raises(ValueError, match=r"t.txt', line 2: not UTF-8"):
        TC.read_texts(texts)


def test_u2_commands_work_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _write_jsonl(tmp_path / "a" / "pairs.jsonl", _pairs(120))
    args = [
        f"--{k}={v}"
        for k, v in {
            **TINY,
            "run.root": "runs",
            "run.name": "r",
            "data.name": "jsonl",
            "data.path": "pairs.jsonl",
        }.items()
    ]
    assert main(["train", "retrieval", *args]) == 0
    monkeypatch.chdir(tmp_path / "b")
    run = str(tmp_path / "a" / "runs" / "r")
    assert main(["eval", run]) == 0
    assert main(["search", run, "read the file", "--k", "2"]) == 0
    (tmp_path / "b" / "t.txt").write_text("read a file\n")
    (tmp_path / "a" / "pairs.jsonl").unlink()  # embed of a file needs no training data
    assert main(["embed", run, "--data", "t.txt", "--out", "e.npy"]) == 0
    assert np.load(tmp_path / "b" / "e.npy").shape[0] == 1
    assert main(["eval", run]) == 3  # eval does: the missing file is named


def test_u3_zero_test_fraction_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"data.test_fraction must be in \(0, 1\)") as err:
        apply_overrides(RetrievalConfig(), {"data.test_fraction": 0.0})
    assert "summing" not in str(err.value)
    with pytest.raises(ValueError, match="below 1"):
        apply_overrides(RetrievalConfig(), {"data.test_fraction": 0.6, "data.validation_fraction": 0.5})


def test_u4_truncated_line_message(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"query": "a", "positive": "b"}\n{"query": "abc\n')
    with pytest.raises(ValueError, match="line 2") as err:
        TC.read_jsonl(f)
    assert "at at" not in str(err.value) and "Unterminated string" in str(err.value)


def test_u5_utf8_bom_is_accepted(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + b'{"query": "q", "positive": "p"}\n')
    assert TC.read_jsonl(f)[0].query == "q"
    g = tmp_path / "bom.txt"
    g.write_bytes(b"\xef\xbb\xbfone\ntwo\n")
    assert TC.read_texts(g) == ["one", "two"]


@pytest.mark.parametrize("flag", [["--lines", "-1"], ["--lines", "0"], ["--k", "0"]])
def test_u7_search_refuses_negative_lines(trained, capsys, flag):
    assert main(["search", str(trained[0]), "read", *flag]) == 2
    assert flag[0] in _err(capsys)


# -- also ------------------------------------------------------------------------------------
def test_also_batch_above_the_pairs_is_shown_as_used(tmp_path, capsys):
    _train(tmp_path, **{"train.batch_size": 4096})
    out = capsys.readouterr().out
    n = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["pairs"]["train"]
    assert f"batch {n} (train.batch_size=4096 is more than the {n} training pairs)" in out


def test_also_unused_given_negatives_are_named(tmp_path, capsys):
    _train(tmp_path, **{"pairs.hard_negatives": 0})
    assert "negatives given in the data are not used: pairs.hard_negatives=0" in capsys.readouterr().out


def test_also_initial_encoder_row_is_named_for_what_it_is(tmp_path):
    for encoder, name in (
        ("bag", "random encoder"),
        ("hf", "pretrained encoder (before fine-tuning)"),
        ("python:contrastive.train.text.encoders:BagEncoder", "initial encoder (before training)"),
    ):
        more = {"model.path": str(tmp_path)} if encoder == "hf" else {}
        cfg = apply_overrides(RetrievalConfig(), {"model.encoder": encoder, **more})
        assert RetrievalTask(cfg).initial_name() == name


def test_also_embed_batch_size_must_be_positive(trained, tmp_path, capsys):
    assert (
        main(
            [
                "embed",
                str(trained[0]),
                "--data",
                "test",
                "--batch-size",
                "0",
                "--out",
                str(tmp_path / "e.npy"),
            ]
        )
        == 2
    )
    assert "--batch-size" in _err(capsys)


def test_also_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run, _ = _train(tmp_path)
    finally:
        os.umask(old)
    for name in ("config.toml", "run.json", "metrics.csv", "model.safetensors", "checkpoints/last.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name


# -- the second hostile pass (inputs the issue did not list) --------------------------------
def test_hostile_checkpoint_of_another_run_is_refused(run, tmp_path, capsys):
    other, _ = _train(tmp_path, "twin")  # same data and settings: the same shapes
    shutil.copy(other / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 3
    assert "belongs to another run" in _err(capsys)
    assert main(["train", "retrieval", "--resume", str(run), "--train.epochs=2"]) == 3


def test_hostile_damaged_config_toml_is_a_damaged_run(run, capsys):
    (run / "config.toml").write_text("[model\nvocab_size = ")
    capsys.readouterr()
    assert main(["search", str(run), "read"]) == 3
    assert "config.toml" in _err(capsys)


def test_hostile_non_utf8_config_names_the_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'[run]\nname = "caf\xe9"\n')
    assert main(["train", "retrieval", f"--config={cfg}"]) == 2
    assert "line 2: not UTF-8" in _err(capsys)


def test_hostile_unwritable_out_and_run_root_are_bad_arguments(trained, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "e.npy"
    assert main(["embed", str(trained[0]), "--data", "test", "--out", str(out)]) == 2
    assert "--out" in _err(capsys)
    data = _write_jsonl(tmp_path / "d.jsonl", _pairs(40))
    args = [f"--{k}={v}" for k, v in {**TINY, "data.name": "jsonl", "data.path": data}.items()]
    assert main(["train", "retrieval", *args, f"--run.root={tmp_path / 'afile'}"]) == 2
    assert "run.root" in _err(capsys)


def test_hostile_a_lone_rank_1_says_what_it_waits_for(tmp_path, monkeypatch, capsys):
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = _write_jsonl(tmp_path / "d.jsonl", _pairs(40))
    args = [
        f"--{k}={v}"
        for k, v in {**TINY, "run.root": tmp_path / "runs", "data.name": "jsonl", "data.path": data}.items()
    ]
    assert main(["train", "retrieval", *args, "--dist.timeout_s=3"]) == 2
    err = _err(capsys)
    assert "rank 0's store" in err and "unset RANK" in err


def test_hostile_a_folder_for_a_file_is_a_bad_argument(trained, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert (
        main(["embed", str(trained[0]), "--data", str(tmp_path / "folder"), "--out", str(tmp_path / "e.npy")])
        == 2
    )
    assert "is a folder" in _err(capsys)
    args = [f"--{k}={v}" for k, v in {**TINY, "data.name": "jsonl", "data.path": tmp_path / "folder"}.items()]
    assert main(["train", "retrieval", *args, f"--run.root={tmp_path / 'runs'}"]) == 2
    assert "is a folder" in _err(capsys)


def test_s2_changed_extra_corpus_or_broken_data_is_named_as_changed(tmp_path, capsys):
    corpus = tmp_path / "more.jsonl"
    corpus.write_text('{"text": "def unrelated():\\n    return 0"}\n')
    run, data = _train(tmp_path, **{"data.corpus": corpus})
    corpus.write_text('{"text": "def other():\\n    return 1"}\n')
    capsys.readouterr()
    assert main(["search", str(run), "read"]) == 3
    assert "more.jsonl" in _err(capsys)
    corpus.write_text('{"text": "def unrelated():\\n    return 0"}\n')  # restored: answers again
    assert main(["search", str(run), "read", "--k", "1"]) == 0
    data.write_text("not json at all\n")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 3
    assert "changed since training" in _err(capsys)


def test_hostile_paths_are_stored_expanded_and_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(
        RetrievalConfig(),
        {"data.name": "jsonl", "data.path": "~/p.jsonl", "data.corpus": "c.jsonl", "model.path": "m"},
    )
    assert (cfg.data.path, cfg.data.corpus, cfg.model.path) == tuple(
        str(tmp_path / f) for f in ("p.jsonl", "c.jsonl", "m")
    )
