"""``contrastive train retrieval``: tiny runs on a few standard-library modules and on a
user's JSONL, a tiny random BERT from a temporary folder, hard-negative mining, the loss
options, gradient caching, and ``eval`` / ``embed`` / ``search`` on a finished run."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from contrastive.cli import main
from contrastive.train.config import apply_overrides
from contrastive.train.recipes.retrieval import RetrievalConfig, RetrievalTask, search

WORDS = (
    "read write open close parse dump load save sort merge split join count find index stream buffer "
    "socket file path json text line token cache queue"
).split()


def _pairs(n: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.sample(WORDS, 3)
        out.append(
            {
                "query": f"{a} the {b} of a {c}",
                "positive": f"def {a}_{b}_{i}({c}):\n    return {c}.{b}()",
                "negatives": [f"def {b}_{a}_{i}(x):\n    pass"] if i % 3 == 0 else [],
            }
        )
    return out


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TINY = {
    "model.vocab_size": 300,
    "model.dim": 16,
    "model.query_length": 12,
    "model.doc_length": 24,
    "train.epochs": 1,
    "train.batch_size": 16,
    "run.progress": False,
    "run.threads": 1,
    "eval.batch_size": 64,
}


def _args(tmp_path, **more):
    items = {**TINY, "run.root": str(tmp_path / "runs"), **more}
    return [f"--{k}={v}" for k, v in items.items()]


@pytest.fixture
def jsonl(tmp_path):
    return _write_jsonl(tmp_path / "pairs.jsonl", _pairs(160))


def test_pycode_run_then_eval_embed_search(tmp_path, capsys):
    args = _args(tmp_path, **{"data.packages": "json,csv,email", "run.name": "r", "pairs.hard_negatives": 2})
    assert main(["train", "retrieval", *args]) == 0
    run = tmp_path / "runs" / "r"
    summary = json.loads((run / "summary.json").read_text())
    for row in ("bm25", "tfidf", "random encoder"):
        assert 0 <= summary["baselines"][row]["mrr_at_10"] <= 1
    assert 0 <= summary["trained"]["mrr_at_10"] <= 1 and "fused_mrr_at_10" in summary["trained"]
    corpus = json.loads((run / "corpus.json").read_text())
    assert set(corpus["pairs"]) == {"train", "validation", "test"} and len(corpus["sha256"]) == 64
    assert (
        (run / "tokenizer.json").is_file() and (run / "mrr.png").is_file() and (run / "metrics.csv").is_file()
    )
    out = capsys.readouterr().out
    assert "BM25 + trained encoder (RRF)" in out and "TF-IDF cosine" in out
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["rows"]["bm25"] == summary["baselines"]["bm25"]
    assert main(["embed", str(run), "--data", "test", "--out", str(tmp_path / "e.npy")]) == 0
    e = np.load(tmp_path / "e.npy")
    assert e.shape[1] == 16 and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    capsys.readouterr()
    assert main(["search", str(run), "parse a JSON document", "--k", "3"]) == 0
    assert capsys.readouterr().out.count("score") == 3
    hits = search(run, "parse a JSON document", k=5)
    assert len(hits) == 5 and [s for s, _ in hits] == sorted((s for s, _ in hits), reverse=True)


@pytest.mark.parametrize(
    "more",
    [
        {"loss.name": "siglip", "loss.temperature": 0.1},
        {
            "loss.directions": "query_to_doc,doc_to_query",
            "loss.partition_mode": "per_direction",
            "loss.learn_temperature": True,
            "model.shared": False,
        },
        {
            "loss.hardness_mode": "hard_negatives",
            "loss.hardness_strength": 2.0,
            "loss.matryoshka_dims": "16,8",
        },
        {"model.encoder": "transformer", "model.layers": 1, "model.heads": 2, "train.chunk_size": 6},
        {"model.bigram_buckets": 64, "model.hidden": 32, "model.tokenizer": "bpe"},
    ],
)
def test_jsonl_runs_with_each_option(tmp_path, jsonl, more):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "def unrelated():\\n    return 0"}\n')
    args = _args(
        tmp_path, **{"data.name": "jsonl", "data.path": jsonl, "data.corpus": corpus, "run.name": "j", **more}
    )
    assert main(["train", "retrieval", *args]) == 0
    summary = json.loads((tmp_path / "runs" / "j" / "summary.json").read_text())
    assert np.isfinite(summary["trained"]["mrr_at_10"])
    if more.get("loss.learn_temperature"):
        assert summary["trained"]["temperature"] != pytest.approx(0.05)


def test_bad_jsonl_is_one_line_with_the_line_number(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "positive": "b"}\n{"query": "c"}\n')
    assert main(["train", "retrieval", *_args(tmp_path, **{"data.name": "jsonl", "data.path": bad})]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 2" in err and '"positive" is missing' in err and len(err.splitlines()) == 1


def _task(tmp_path, jsonl, **more):
    cfg = apply_overrides(
        RetrievalConfig(),
        {**TINY, "run.root": str(tmp_path / "runs"), "data.name": "jsonl", "data.path": str(jsonl), **more},
    )
    task = RetrievalTask(cfg)
    task.prepare()
    return task


def test_the_task_mines_negatives_from_its_training_split(tmp_path, jsonl):
    """The recipe's wiring of train/text/mining.py (tested there): the given negatives first."""
    task = _task(tmp_path, jsonl, **{"pairs.hard_negatives": 3, "pairs.mine_depth": 5})
    cand, gold = task.candidates, task.tr.gold
    assert cand.shape == (len(gold), 5) and not (cand == gold[:, None]).any()
    for i, pair in enumerate(task.train_pairs):
        if pair.negatives:
            assert task.tr.docs[int(cand[i, 0])] == pair.negatives[0]


def test_chunked_step_equals_the_plain_step(tmp_path, jsonl):
    """Gradient caching through the loop gives the plain step's gradients (float64)."""
    from contrastive.train import loop

    task = _task(tmp_path, jsonl, **{"pairs.hard_negatives": 2, "model.token_dropout": 0.2})
    torch.manual_seed(0)
    model = task.build(torch.device("cpu")).double()
    batch = task.batch(torch.arange(16), torch.device("cpu"))
    grads = []
    for chunk in (0, 5):
        model.zero_grad()
        torch.manual_seed(1)
        loop._step(task, model, batch, chunk, None, None, lambda v: None)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_hf_encoder_on_a_tiny_random_bert(tmp_path, jsonl):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "bert"
    vocab = (
        [
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            "def",
            "return",
            "the",
            "of",
            "a",
            "pass",
            "x",
            "(",
            ")",
            ":",
            ".",
            "_",
        ]
        + WORDS
        + [str(i) for i in range(10)]
    )
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder)
    for pooling in ("mean", "cls"):
        args = _args(
            tmp_path,
            **{
                "data.name": "jsonl",
                "data.path": jsonl,
                "model.encoder": "hf",
                "model.path": folder,
                "model.pooling": pooling,
                "run.name": pooling,
            },
        )
        assert main(["train", "retrieval", *args]) == 0
        run = tmp_path / "runs" / pooling
        summary = json.loads((run / "summary.json").read_text())
        assert summary["trained"]["mrr_at_10"] >= 0
        # the trained tower as a sentence-transformers model: its encode is `contrastive embed`
        assert summary["paths"]["sentence_transformers"] == str(run / "model")
        st = pytest.importorskip("sentence_transformers")
        texts = ["read the file", "def parse_json_3(text):\n    return text.json()", "sort a queue of tokens"]
        (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        out = tmp_path / f"{pooling}.npy"
        assert main(["embed", str(run), "--data", str(tmp_path / "texts.jsonl"), "--out", str(out)]) == 0
        ours = np.load(out)
        theirs = st.SentenceTransformer(str(run / "model"), device="cpu").encode(texts, convert_to_numpy=True)
        assert theirs.dtype == np.float32 and theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
        assert not np.allclose(ours, _pretrained_embeddings(folder, pooling, texts), atol=1e-3)  # trained
    assert len(search(tmp_path / "runs" / "cls", "read the file", k=2)) == 2
    bad = _args(
        tmp_path,
        **{
            "data.name": "jsonl",
            "data.path": jsonl,
            "model.encoder": "hf",
            "model.path": tmp_path / "nothing",
        },
    )
    assert main(["train", "retrieval", *bad]) == 3  # a missing model folder: exit 3 (README exit-code table)
    wide = _args(
        tmp_path,
        **{
            "data.name": "jsonl",
            "data.path": jsonl,
            "model.encoder": "hf",
            "model.path": folder,
            "loss.matryoshka_dims": "32,8",
            "run.name": "wide",
        },
    )
    assert main(["train", "retrieval", *wide]) == 2  # prefixes wider than the BERT's 16: refused


def _pretrained_embeddings(folder, pooling, texts):
    """The tiny BERT's embeddings before training (the export must hold the trained weights)."""
    from contrastive.train.text.encoders import HFEncoder

    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, truncation=True, max_length=24, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = HFEncoder(str(folder), pooling).eval()(dict(enc))
    return torch.nn.functional.normalize(out, dim=1).numpy()


def test_config_errors():
    with pytest.raises(ValueError, match="data.path"):
        apply_overrides(RetrievalConfig(), {"data.name": "jsonl"})
    with pytest.raises(ValueError, match="pairs.mine_depth"):
        apply_overrides(RetrievalConfig(), {"pairs.hard_negatives": 30})
    with pytest.raises(ValueError, match="model.path"):
        apply_overrides(RetrievalConfig(), {"model.encoder": "hf"})
    assert dataclasses.asdict(RetrievalConfig())["optim"]["fused"] is True
    assert RetrievalConfig().loss.name == "info_nce"
    with pytest.raises(
        ValueError, match="loss.name must be 'info_nce', not 'infonce'"
    ):  # one spelling, no alias
        apply_overrides(RetrievalConfig(), {"loss.name": "infonce"})
    with pytest.raises(ValueError, match=r"loss.name must be one of \('info_nce', 'siglip'\)"):
        apply_overrides(RetrievalConfig(), {"loss.name": "triplet"})


def test_own_encoder_by_import_path(tmp_path, jsonl):
    args = _args(
        tmp_path,
        **{
            "data.name": "jsonl",
            "data.path": jsonl,
            "run.name": "own",
            "model.encoder": "python:contrastive.train.text.encoders:BagEncoder",
        },
    )
    assert main(["train", "retrieval", *args]) == 0
    assert json.loads((tmp_path / "runs" / "own" / "summary.json").read_text())["trained"]["mrr_at_10"] >= 0
    assert not (tmp_path / "runs" / "own" / "model").exists()  # a sentence-transformers folder: hf only
    assert len(search(tmp_path / "runs" / "own", "read the file", k=3)) == 3


def test_resume_is_exact(tmp_path, jsonl):
    base = {"data.name": "jsonl", "data.path": jsonl, "pairs.hard_negatives": 2, "optim.schedule": "constant"}
    assert (
        main(["train", "retrieval", *_args(tmp_path, **base, **{"run.name": "full", "train.epochs": 2})]) == 0
    )
    assert (
        main(["train", "retrieval", *_args(tmp_path, **base, **{"run.name": "half", "train.epochs": 1})]) == 0
    )
    half = tmp_path / "runs" / "half"
    assert main(["train", "retrieval", "--resume", str(half), "--train.epochs=2"]) == 0
    full = json.loads((tmp_path / "runs" / "full" / "summary.json").read_text())["trained"]
    assert json.loads((half / "summary.json").read_text())["trained"] == full


def test_eval_uses_the_runs_own_tokenizer(tmp_path, jsonl):
    args = _args(tmp_path, **{"data.name": "jsonl", "data.path": jsonl, "run.name": "t"})
    assert main(["train", "retrieval", *args]) == 0
    run = tmp_path / "runs" / "t"
    for f in (tmp_path / "runs" / ".cache").glob("tokenizer-*.json"):
        f.unlink()  # eval must not retrain (a new vocabulary would not fit the trained weights)
    assert main(["eval", str(run)]) == 0
    assert (
        json.loads((run / "eval.json").read_text())["rows"]["trained encoder (last.pt, epoch 1)"]["mrr_at_10"]
        == json.loads((run / "summary.json").read_text())["trained"]["mrr_at_10"]
    )
