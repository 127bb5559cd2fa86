"""``contrastive search``: the corpus's embeddings are cached (a second search encodes only the
queries), keyed by the checkpoint (a changed one is embedded again), never trusted when damaged,
kept in the user's cache directory where the run folder is read-only; many queries in one
call (``--queries FILE`` or ``-``); the run's checks stay."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import tomllib
import torch

from contrastive.cli import main
from contrastive.train.recipes import retrieval as R
from contrastive.train.text import search as S

from .test_retrieval import _args, _pairs, _write_jsonl

QUERIES = ["read the file", "parse a json text", "sort the queue"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    jsonl = _write_jsonl(tmp / "pairs.jsonl", _pairs(120))
    assert (
        main(
            ["train", "retrieval", *_args(tmp, **{"data.name": "jsonl", "data.path": jsonl, "run.name": "s"})]
        )
        == 0
    )
    return tmp / "runs" / "s"


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (no cache yet), its data where the run expects it."""
    copy = tmp_path / "s"
    shutil.copytree(trained, copy)
    shutil.rmtree(copy / "cache", ignore_errors=True)
    return copy


@pytest.fixture
def counted(monkeypatch, tmp_path_factory):
    """Counts the corpus reads and the documents embedded by the document tower."""
    calls = {"corpus": 0, "docs": 0}
    corpus, embed = R.RetrievalTask.test_corpus, R.RetrievalTask._embed_tokens

    def test_corpus(self):
        calls["corpus"] += 1
        return corpus(self)

    def embed_tokens(self, model, tok, side, n):
        if side == "doc":
            calls["docs"] += n
        return embed(self, model, tok, side, n)

    monkeypatch.setattr(R.RetrievalTask, "test_corpus", test_corpus)
    monkeypatch.setattr(R.RetrievalTask, "_embed_tokens", embed_tokens)
    calls["user_cache"] = str(tmp_path_factory.mktemp("xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", calls["user_cache"])  # never the real user's cache
    return calls


def _same(a, b):
    assert [t for _, t in a] == [t for _, t in b]
    assert [s for s, _ in a] == pytest.approx([s for s, _ in b], abs=1e-6)


def test_a_second_search_does_not_embed_the_corpus(run, counted):
    first = R.search(run, QUERIES[0], k=5)
    n_docs = counted["docs"]
    assert n_docs > 0 and counted["corpus"] == 1 and (run / "cache" / "search-last.pt").is_file()
    again = R.search(run, QUERIES[0], k=5)
    assert counted["docs"] == n_docs and counted["corpus"] == 1  # nothing read or embedded again
    _same(first, again)
    # the cached answer is the uncached one: the cache dropped, the corpus embedded afresh
    (run / "cache" / "search-last.pt").unlink()
    _same(R.search(run, QUERIES[0], k=5), first)
    assert counted["docs"] == 2 * n_docs


def test_a_changed_checkpoint_invalidates_the_cache(run, counted):
    before = R.search(run, QUERIES[0], k=5)
    n_docs = counted["docs"]
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    state["model"] = {
        k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    torch.save(state, path)
    after = R.search(run, QUERIES[0], k=5)
    assert counted["docs"] == 2 * n_docs  # embedded again with the new weights
    assert [s for s, _ in after] != pytest.approx([s for s, _ in before], abs=1e-6)
    R.search(run, QUERIES[0], k=5)
    assert counted["docs"] == 2 * n_docs  # and cached again under the new key


def test_a_damaged_cache_is_rebuilt(run, counted):
    first = R.search(run, QUERIES[1], k=3)
    n_docs = counted["docs"]
    cache = run / "cache" / "search-last.pt"
    for damage in (b"not a torch file", cache.read_bytes()[:100]):
        cache.write_bytes(damage)
        _same(R.search(run, QUERIES[1], k=3), first)
    obj = torch.load(cache, weights_only=True)
    obj["embeddings"] = obj["embeddings"][:-1]  # readable, but does not match its documents
    torch.save(obj, cache)
    _same(R.search(run, QUERIES[1], k=3), first)
    assert counted["docs"] == 4 * n_docs
    R.search(run, QUERIES[1], k=3)
    assert counted["docs"] == 4 * n_docs  # the rebuilt file is used


def test_a_read_only_run_folder_uses_the_user_cache_dir(run, counted, monkeypatch):
    real = S._writable
    monkeypatch.setattr(
        S, "_writable", lambda folder: False if run in folder.parents or folder == run else real(folder)
    )
    first = R.search(run, QUERIES[2], k=4)
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    user = S.user_cache_dir() / "search" / f"{run_id}-last.pt"
    assert str(S.user_cache_dir()).startswith(counted["user_cache"]) and user.is_file()
    assert not (run / "cache" / "search-last.pt").exists()
    n_docs = counted["docs"]
    _same(R.search(run, QUERIES[2], k=4), first)
    assert counted["docs"] == n_docs  # read back from the user's cache directory
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", counted["user_cache"] + "/home")
    assert S.user_cache_dir() == S.Path(counted["user_cache"]) / "home" / ".cache" / "contrastive"


def test_a_cache_file_in_the_way_is_not_replaced(run, counted):
    (run / "cache").write_text("the user's own file")  # `cache` is not a folder: left alone
    R.search(run, QUERIES[0], k=2)
    assert (run / "cache").read_text() == "the user's own file"
    assert any((S.user_cache_dir() / "search").glob("*-last.pt"))


def test_many_queries_in_one_call(run, counted, capsys, monkeypatch, tmp_path):
    single = [R.search(run, q, k=2) for q in QUERIES]
    many = R.search(run, QUERIES, k=2)
    assert len(many) == len(single)
    for a, b in zip(many, single):
        _same(a, b)  # one batch of queries: the same ranking as one call each
    file = tmp_path / "queries.txt"
    file.write_text("\n".join(QUERIES) + "\n\n")
    n_docs = counted["docs"]
    capsys.readouterr()
    assert main(["search", str(run), "--queries", str(file), "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert [line[3:] for line in out.splitlines() if line.startswith("== ")] == QUERIES
    assert out.count("#1  score") == 3 and out.count("#2  score") == 3
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(QUERIES[:2])))
    assert main(["search", str(run), "--queries", "-", "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert [line[3:] for line in out.splitlines() if line.startswith("== ")] == QUERIES[:2]
    assert counted["docs"] == n_docs  # every call after the first read the cache
    for bad in (["search", str(run)], ["search", str(run), "q", "--queries", str(file)]):
        assert main(bad) == 2
        assert "--queries FILE" in capsys.readouterr().err
    file.write_text("\n\n")
    assert main(["search", str(run), "--queries", str(file)]) == 2


def test_the_runs_checks_stay_with_a_cache(run, counted, capsys):
    R.search(run, QUERIES[0], k=2)  # cached
    data = tomllib.loads((run / "config.toml").read_text())["data"]["path"]
    original = open(data).read()
    try:
        with open(data, "a") as fh:
            fh.write(json.dumps({"query": "new", "positive": "def new(): pass"}) + "\n")
        assert main(["search", str(run), QUERIES[0]]) == 3
        assert "changed since training" in capsys.readouterr().err
    finally:
        open(data, "w").write(original)
    tok = run / "tokenizer.json"
    tok.write_text(tok.read_text() + " ")
    assert main(["search", str(run), QUERIES[0]]) == 3
    assert "not the tokenizer the run was trained with" in capsys.readouterr().err
