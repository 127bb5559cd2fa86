"""Dense retrieval: two towers, in-batch and BM25-mined hard negatives, evaluated against BM25.

The default data is code search over this Python installation (:mod:`contrastive.train.text.corpus`):
a function's docstring summary is the query, its source without the docstring the document.
For every batch of queries: their positive documents plus ``pairs.hard_negatives`` (K)
documents per query drawn from the top ``pairs.mine_depth`` BM25 hits of the training corpus
(never the positive itself), all embedded by the document tower; the query tower embeds the
queries; the loss is :func:`contrastive.retrieval_loss` (every positive and every hard negative
of the batch is a candidate of every query; a duplicate of a query's own positive is not its
negative), with its features from the ``loss.*`` settings (directions, partition mode,
hardness, HCL, Matryoshka; :class:`RetrievalLossConfig`), or, with ``loss.name=siglip``,
:func:`contrastive.siglip_loss` over the in-batch pairs.

Evaluation: every query of the held-out split against the whole held-out corpus, MRR@10,
Recall@1, Recall@10 and nDCG@10 for BM25, TF-IDF, the randomly initialised encoder, the trained
encoder, and BM25 + trained fused by reciprocal rank. ``best.pt`` keeps the best validation
MRR@10. The run folder also holds ``tokenizer.json`` and ``corpus.json`` (package versions,
pairs per split, content hash), and for a Hugging Face encoder with one shared tower ``model/``,
the trained model as a sentence-transformers folder (:mod:`contrastive.train.text.export`).
Everything else is the shared loop's (:mod:`contrastive.train.loop`); the text machinery
(corpus, tokenizer and its cache, BM25 mining, search and its cache) is
:mod:`contrastive.train.text`'s.

Run it with ``contrastive train retrieval``; ``contrastive search RUN "a query"`` shows the top
documents of a trained run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import distributed as cd
from ... import retrieval_loss, siglip_loss
from ..._optional import needs
from .. import loop
from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..dist import broadcast, limit_threads
from ..runlog import format_table
from ..text import corpus as TC
from ..text.encoders import BagEncoder, DualEncoder, HFEncoder, TransformerTextEncoder
from ..text.lexical import BM25, TfIdf
from ..text.metrics import METRICS, evaluate_scorer, rrf_scores
from ..text.mining import cached_mine
from ..text.search import check_queries, search_run
from ..text.tokenizer import TextTokenizer, cached_tokenizer, load_run_tokenizer
from .base import Recipe
from .retrieval_config import (  # noqa: F401 - re-exported: the recipe's configuration
    ENCODERS,
    PairsConfig,
    RetrievalConfig,
    RetrievalEvalConfig,
    RetrievalLossConfig,
    TextDataConfig,
    TextModelConfig,
    TextOptimConfig,
    check_prefixes,
)

__all__ = [
    "RetrievalConfig",
    "RetrievalTask",
    "embed_data",
    "evaluate_run",
    "load_encoder",
    "search",
    "train",
]

_LABELS = {"bm25": "BM25", "tfidf": "TF-IDF cosine"}  # summary.json keys -> table rows


@dataclasses.dataclass
class _Split:
    """Queries, a corpus of unique documents and each query's document (``gold``)."""

    queries: list[str]
    docs: list[str]
    gold: torch.Tensor  # (Q,) int64 index into docs
    q_tok: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # (Q, Lq) each
    d_tok: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # (D, Ld) each


def _as_split(pairs: Sequence[TC.Pair], extra_docs: Sequence[str] = ()) -> _Split:
    docs: dict[str, int] = {}
    for text in [p.positive for p in pairs] + list(extra_docs):
        docs.setdefault(text, len(docs))
    gold = torch.tensor([docs[p.positive] for p in pairs], dtype=torch.int64)
    return _Split([p.query for p in pairs], list(docs), gold)


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _subset(pairs: list[TC.Pair], n: int, seed: int) -> list[TC.Pair]:
    if not n or n >= len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n))
    return [pairs[i] for i in keep]


def _trim(tok: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """Rows of a tokenised block, cut to the longest non-padding row."""
    out = {k: v[rows] for k, v in tok.items()}
    mask = out["attention_mask"] if "attention_mask" in out else out["ids"]
    width = int((mask != 0).sum(1).max()) if mask.numel() else 1
    return {k: v[:, : max(width, 1)] for k, v in out.items()}


class _Model(nn.Module):
    """The DualEncoder as one module whose ``forward(batch, side)`` DDP can wrap."""

    def __init__(self, dual: DualEncoder):
        super().__init__()
        self.dual = dual

    def forward(self, batch: dict[str, torch.Tensor], side: str = "query") -> torch.Tensor:
        return self.dual.encode_queries(batch) if side == "query" else self.dual.encode_docs(batch)


class RetrievalTask(loop.Task):
    """Two-tower retrieval on the shared loop."""

    name = "retrieval"
    nonfinite_hint = "a lower optim.lr, train.grad_clip > 0 or a higher loss.temperature"
    throughput_key = "queries_per_s"

    # -- data ----------------------------------------------------------------------------
    def run_name(self) -> str:
        return f"retrieval-{self.cfg.data.name}"

    def _load_pairs(self) -> TC.RetrievalData:
        d, root = self.cfg.data, Path(self.cfg.run.root) / ".cache"
        if d.name == "pycode":
            data = TC.load_pycode(
                root, d.package_list(), progress=self.cfg.run.progress and self.dist.is_main
            )
            if self.resuming:  # a package upgrade changes the corpus (and the cache it is read from)
                self._check_data(data.meta, {"sha256": ""})
            return data
        if self.resuming:
            self._jsonl_hashes()  # before parsing: a changed file is named as changed, whatever it now holds
        parts = TC.split_jsonl(TC.read_jsonl(d.path), d.validation_fraction, d.test_fraction, d.split_seed)
        extra = TC.read_corpus(d.corpus) if d.corpus else []
        if not parts["train"] or not parts["test"]:
            raise ValueError(
                f"{d.path}: the split left {len(parts['train'])} training and {len(parts['test'])} test "
                f"pairs (it goes by query: the {len({p.query for v in parts.values() for p in v})} distinct "
                f"queries, each with all its pairs); give more lines with distinct queries or change "
                f"data.test_fraction"
            )
        meta = {
            "file": str(d.path),
            "sha256": _sha256(d.path),
            "pairs": {s: len(v) for s, v in parts.items()},
            "extra_corpus": len(extra),
        }
        if d.corpus:
            meta["extra_corpus_sha256"] = _sha256(d.corpus)
        return TC.RetrievalData("jsonl", parts["train"], parts["validation"], parts["test"], extra, meta)

    def _jsonl_hashes(self) -> dict[str, str]:
        """The sha256 of the run's JSONL data files now, checked against ``run.json``."""
        d = self.cfg.data
        for key, path in (("data.path", d.path), ("data.corpus", d.corpus)):
            if path and not Path(path).is_file():
                raise CheckpointError(
                    f"{path} ({key} of the run {self.run_dir}) is missing; this command needs the "
                    f"run's data: restore the file the run was trained on"
                )
        now = {
            "sha256": _sha256(d.path),
            **({"extra_corpus_sha256": _sha256(d.corpus)} if d.corpus else {}),
        }
        self._check_data(now, {"sha256": d.path, "extra_corpus_sha256": d.corpus})
        return now

    def data_hashes(self) -> dict[str, str] | None:
        """The hashes of the run's data now, checked against ``run.json`` as loading the data
        checks them, without parsing it; None for a ``pycode`` corpus not built here yet."""
        d = self.cfg.data
        if d.name == "jsonl":
            return self._jsonl_hashes()
        meta = TC.pycode_meta(Path(self.cfg.run.root) / ".cache", d.package_list())
        if meta is None:
            return None
        self._check_data(meta, {"sha256": ""})
        return {"sha256": meta.get("sha256", "")}

    def _check_data(self, meta: dict[str, Any], files: dict[str, str]) -> None:
        """A resumed or loaded run reads the data it was trained on: each hash ``run.json``
        recorded must match the file's now, or (``allow_changed_data``) the change is noted."""
        from ..rundir import read_run

        recorded = read_run(self.run_dir).get("corpus", {}) if self.run_dir is not None else {}
        changed = {
            key: {
                "file": files.get(key) or meta.get("cache", ""),
                "recorded": recorded[key],
                "now": meta.get(key),
            }
            for key in files
            if key in recorded and recorded[key] != meta.get(key)
        }
        if not changed:
            return
        shown = "; ".join(
            f"{c['file']}: sha256 {c['now']} now, {c['recorded']} when trained" for c in changed.values()
        )
        if not self.allow_changed_data:
            raise CheckpointError(
                f"the run's data changed since training ({shown}); restore the file the run was trained "
                f"on, or pass --allow-changed-data to answer from the changed file (eval / search / embed)"
            )
        self.notes["data_changed"] = list(changed.values())
        print(
            f"contrastive: note: answering from changed data, as --allow-changed-data asks ({shown})",
            file=sys.stderr,
        )

    def prepare(self) -> int:
        # under torchrun rank 0 builds the caches (pairs, tokenizer, mined negatives) first and
        # the other ranks then read them: every rank gets the same tokenizer (its trainer is not
        # bit-reproducible) and no two processes write one cache file
        dc = self.dist
        if dc.active and not dc.is_main:
            broadcast(None, dc)  # waits for rank 0's caches
        n = self._prepare()
        if dc.active and dc.is_main:
            broadcast(None, dc)
        return n

    def _prepare(self) -> int:
        cfg, d = self.cfg, self.cfg.data
        data = self._load_pairs()
        self.meta = data.meta
        train = _subset(data.train, d.train_limit, d.split_seed)
        self.train_pairs = train
        self.tr = _as_split(train, [n for p in train for n in p.negatives])
        # no validation split (data.validation_fraction=0, or too few pairs): never the test
        # split in its place; best.pt is then the last evaluated epoch (header, summary.json)
        self.val = _as_split(_subset(data.validation, d.test_limit, d.split_seed))
        self.test = self._test_split(data)
        if len(self.tr.queries) < 2:
            raise ConfigError(
                f"the training split has {len(self.tr.queries)} pair(s); retrieval needs at least 2"
            )
        self.tokenizer = self._tokenizer()
        m = cfg.model
        for split in (self.tr, self.val, self.test):
            if not split.queries:
                continue
            split.q_tok = self._encode(split.queries, m.query_length)
            split.d_tok = self._encode(split.docs, m.doc_length)
        self.candidates = self._cached_mine() if cfg.pairs.hard_negatives else None
        return len(self.tr.queries)

    def _test_split(self, data: TC.RetrievalData) -> _Split:
        d = self.cfg.data
        return _as_split(_subset(data.test, d.test_limit, d.split_seed), data.extra_corpus)

    def test_corpus(self) -> list[str]:
        """The test split's documents (what ``search`` ranks), read from the run's data."""
        return self._test_split(self._load_pairs()).docs

    def prepare_model(self) -> None:
        """The run's tokenizer only: ``embed`` of a user's file needs no training data."""
        self.meta = {}
        self.tokenizer = self._tokenizer()

    def _cached_mine(self) -> torch.Tensor:
        p, tr = self.cfg.pairs, self.tr
        return cached_mine(
            Path(self.cfg.run.root) / ".cache",
            tr.queries,
            tr.docs,
            tr.gold,
            [x.negatives for x in self.train_pairs],
            p.mine_depth,
            p.bm25_k1,
            p.bm25_b,
        )

    def _tokenizer(self):
        m = self.cfg.model
        if m.encoder == "hf":
            with needs("hf", "model.encoder=hf"):
                from transformers import AutoTokenizer

            if not (Path(m.path) / "config.json").is_file():
                raise FileNotFoundError(
                    f"model.path={m.path!r} is not a Hugging Face model folder (no config.json); "
                    f"save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
                )

            return AutoTokenizer.from_pretrained(m.path, local_files_only=True)
        own = self.run_dir / "tokenizer.json" if self.run_dir is not None else None
        if self.resuming and own is not None:  # --resume, eval, embed, search: the run's own, never a new one
            return self._own_tokenizer(own)
        # trained once per training split and cached (tokenizers' trainer is not bit-reproducible)
        tok = cached_tokenizer(
            Path(self.cfg.run.root) / ".cache",
            [self.meta.get("sha256"), self.cfg.data.train_limit, self.cfg.data.split_seed],
            self.tr.queries + self.tr.docs,
            m.vocab_size,
            m.tokenizer,
        )
        if own is not None and self.dist.is_main:
            tok.save(own)
        return tok

    def _own_tokenizer(self, own: Path) -> TextTokenizer:
        from ..rundir import read_run

        return load_run_tokenizer(own, read_run(self.run_dir).get("tokenizer_sha256"))

    def _encode(self, texts: list[str], length: int) -> dict[str, torch.Tensor]:
        if isinstance(self.tokenizer, TextTokenizer):
            return self.tokenizer.batch(texts, length)
        enc = self.tokenizer(texts, truncation=True, max_length=length, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # -- model and steps -----------------------------------------------------------------
    def _tower(self) -> nn.Module:
        m = self.cfg.model
        own = self.encoder
        if own is None and m.encoder.startswith("python:"):
            from ..models import import_factory

            own = import_factory(m.encoder)
        if isinstance(own, nn.Module):
            return own
        if (
            own is not None
        ):  # a factory: factory(vocab_size, dim) -> module mapping {"ids": (B, L)} to (B, dim)
            return own(self.tokenizer.vocab_size, m.dim)
        if m.encoder.startswith("object:"):
            raise ValueError(
                f"this run's encoder ({m.encoder}) was passed from Python; pass it again (encoder=...)"
            )
        if m.encoder == "hf":
            tower = HFEncoder(m.path, m.pooling)
            check_prefixes(self.cfg.loss, tower.dim, f"the hidden size of {m.path}")
            return tower
        v = self.tokenizer.vocab_size
        if m.encoder == "transformer":
            return TransformerTextEncoder(
                v, m.dim, m.layers, m.heads, max(m.query_length, m.doc_length), m.dropout
            )
        return BagEncoder(v, m.dim, m.bigram_buckets, m.hidden, m.token_dropout, m.positions)

    def build(self, device: torch.device) -> nn.Module:
        m, c = self.cfg.model, self.cfg.loss
        query = self._tower()
        doc = None if m.shared or isinstance(self.encoder, nn.Module) else self._tower()
        self.device = device
        self.model = _Model(DualEncoder(query, doc, c.temperature, c.learn_temperature)).to(device)
        return self.model

    def run_info(self) -> dict[str, Any]:
        own = self.run_dir / "tokenizer.json" if self.run_dir is not None else None
        return {
            "corpus": self.meta,
            **({"tokenizer_sha256": _sha256(own)} if own is not None and own.is_file() else {}),
            "pairs": {
                "train": len(self.tr.queries),
                "validation": len(self.val.queries),
                "test": len(self.test.queries),
                "test_documents": len(self.test.docs),
            },
        }

    def batch(self, idx: torch.Tensor, device: torch.device) -> loop.Batch:
        tr = self.tr
        pos = tr.gold[idx]  # (B,)
        docs = pos
        k = self.cfg.pairs.hard_negatives if self.cfg.loss.name == "info_nce" else 0
        if k and self.candidates is not None:
            cand = self.candidates[idx]  # (B, M)
            pick = torch.randint(0, cand.shape[1], (len(idx), k))
            neg = cand.gather(1, pick).flatten().unique()
            neg = neg[~torch.isin(neg, pos)]  # a batch positive is a candidate already
            if self.dist.active:
                neg = self._global_negatives(pos, neg)
            docs = torch.cat([pos, neg])
        q = {k_: v.to(device) for k_, v in _trim(tr.q_tok, idx).items()}
        d = {k_: v.to(device) for k_, v in _trim(tr.d_tok, docs).items()}
        return loop.Batch((q, d), pos.to(device), len(idx))

    def _global_negatives(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global batch's negatives under torchrun: the candidates are
        the concatenation of every rank's documents, so a negative that is another rank's
        positive (a false negative of that query) or that a lower rank already holds (a
        duplicate) is dropped here, as one process drawing the same documents would."""
        import torch.distributed as tdist

        dc = self.dist
        every: list[Any] = [None] * dc.world_size
        tdist.all_gather_object(every, (pos.tolist(), neg.tolist()))
        positives = torch.tensor([i for p, _ in every for i in p], dtype=torch.int64)  # (B,)
        earlier = torch.tensor([i for _, n in every[: dc.rank] for i in n], dtype=torch.int64)
        return neg[~torch.isin(neg, positives) & ~torch.isin(neg, earlier)]

    def embed(self, net: nn.Module, inputs) -> tuple[torch.Tensor, ...]:
        return net(inputs[0], "query"), net(inputs[1], "doc")

    def towers(self, net: nn.Module) -> tuple[nn.Module, ...]:
        return (loop._Tower(net, lambda n, x: n(x, "query")), loop._Tower(net, lambda n, x: n(x, "doc")))

    def loss(self, embeddings: tuple[torch.Tensor, ...], batch: loop.Batch) -> torch.Tensor:
        # unit rows here (a text with no known token embeds to zero and stays a finite zero row)
        q, d = F.normalize(embeddings[0], dim=1), F.normalize(embeddings[1], dim=1)  # (B, dim), (B + M, dim)
        pos_ids = batch.targets
        b = len(pos_ids)
        c = self.cfg.loss
        tau = self.model.dual.temperature() if c.learn_temperature else c.temperature
        if c.name == "siglip":
            fn = cd.siglip_loss if self.dist.active else siglip_loss
            return fn(q, d[:b], tau, c.bias, normalize=False, check_finite=False)
        # under torchrun every rank passes its (M_r, d) share of the negatives, possibly empty,
        # so that all ranks agree on the negatives' form; one process passes None without any
        with_neg = len(d) > b or (
            self.dist.active and self.candidates is not None and self.cfg.pairs.hard_negatives > 0
        )
        neg = d[b:] if with_neg else None  # (M_r, dim)
        if self.dist.active:  # the plain forms only (distributed_refusal, checked in prepare)
            kw = c.loss_kwargs()
            return cd.retrieval_loss(
                q,
                d[:b],
                neg,
                tau,
                directions=kw["directions"],
                partition_mode=kw["partition_mode"],
                positive_ids=pos_ids,
                normalize=False,
                check_finite=False,
            )
        # every prefix normalised on its own (Matryoshka) needs normalize=True; unit rows are unchanged by it
        kw = c.loss_kwargs()
        return retrieval_loss(
            q,
            d[:b],
            neg,
            tau,
            **kw,
            positive_ids=pos_ids,
            normalize=kw["matryoshka_dims"] is not None,
            check_finite=False,
        )

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def _embed_split(self, model: nn.Module, split: _Split) -> tuple[torch.Tensor, torch.Tensor]:
        q = self._embed_tokens(model, split.q_tok, "query", len(split.queries))
        return q, self._embed_tokens(model, split.d_tok, "doc", len(split.docs))

    @torch.no_grad()
    def _embed_tokens(
        self, model: nn.Module, tok: dict[str, torch.Tensor], side: str, n: int
    ) -> torch.Tensor:
        """``(n, dim)`` unit rows of a tokenised block by the ``side`` tower, in eval mode."""
        bs, dev = self.cfg.eval.batch_size, self.device
        was = model.training
        model.eval()
        try:
            out = []
            for i in range(0, n, bs):
                rows = torch.arange(i, min(i + bs, n))
                out.append(model({k: v.to(dev) for k, v in _trim(tok, rows).items()}, side).float().cpu())
            return F.normalize(torch.cat(out), dim=1)
        finally:
            model.train(was)

    def embed_texts(self, model: nn.Module, texts: list[str], side: str) -> torch.Tensor:
        """``(N, dim)`` unit rows of ``texts`` by the ``query`` or the ``doc`` tower."""
        length = self.cfg.model.query_length if side == "query" else self.cfg.model.doc_length
        return self._embed_tokens(model, self._encode(texts, length), side, len(texts))

    def _bm25_scores(self) -> torch.Tensor:
        if getattr(self, "_bm25_test", None) is None:
            bm = BM25(self.test.docs, self.cfg.pairs.bm25_k1, self.cfg.pairs.bm25_b)
            self._bm25_test = torch.from_numpy(bm.scores(self.test.queries))  # (Q, D)
        return self._bm25_test

    def evaluate(self, model: nn.Module) -> tuple[dict[str, float], Any]:
        e = self.cfg.eval
        with torch.random.fork_rng(devices=[]), limit_threads(e.threads):
            val = {}
            if self.val.queries:  # no validation split: nothing to select on (see score)
                qv, dv = self._embed_split(model, self.val)
                val = evaluate_scorer(lambda s: qv[s] @ dv.T, self.val.gold)
            qt, dt = self._embed_split(model, self.test)
            out = evaluate_scorer(lambda s: qt[s] @ dt.T, self.test.gold)
            bm = self._bm25_scores()
            fused = evaluate_scorer(
                lambda s: rrf_scores([bm[s], qt[s] @ dt.T], e.fusion_k, e.fusion_depth), self.test.gold
            )
        out.update({f"val_{k}": v for k, v in val.items()})
        out.update({f"fused_{k}": v for k, v in fused.items()})
        if self.cfg.loss.learn_temperature:
            out["temperature"] = float(self.model.dual.temperature().detach())
        self.fused = fused
        return out, None

    def baselines(self, model: nn.Module) -> dict[str, dict[str, float]]:
        if not self.cfg.eval.baselines:
            return {}
        t = self.test
        with limit_threads(self.cfg.eval.threads):
            bm = self._bm25_scores()
            rows = {"bm25": evaluate_scorer(lambda s: bm[s], t.gold)}
            tfidf = TfIdf(t.docs)
            rows["tfidf"] = evaluate_scorer(lambda s: tfidf.scores(t.queries[s]), t.gold)
        init, _ = self.evaluate(model)
        rows[self.initial_name()] = {k: init[k] for k in METRICS}
        return rows

    def initial_name(self) -> str:
        """The baseline row of the encoder before training, named for what it is."""
        e = self.cfg.model.encoder
        if e == "hf":
            return "pretrained encoder (before fine-tuning)"
        return "random encoder" if e in ENCODERS else "initial encoder (before training)"

    def initial_record(self, baselines) -> dict[str, Any]:
        return dict(baselines.get(self.initial_name(), {}))

    def score(self, metrics, extra) -> float:
        if not self.val.queries:  # no validation split: the latest evaluated epoch is "best"
            return float(metrics["epoch"])
        return metrics.get("val_mrr_at_10", -1.0)

    def selection(self) -> str:
        """How best.pt is chosen (the header and summary.json say it)."""
        if self.val.queries:
            return "validation MRR@10"
        return "last epoch (no validation split: data.validation_fraction=0 or too few pairs)"

    def header(self, what: str, run_dir: Path, device: torch.device) -> str:
        cfg, m = self.cfg, self.cfg.model
        (run_dir / "corpus.json").write_text(
            json.dumps(self.meta, indent=2) + "\n"
        )  # what the data were built from
        towers = "one shared tower" if m.shared else "two towers"
        n, b = len(self.tr.queries), cfg.train.batch_size
        batch = (
            f"batch {b}"
            if b <= n
            else f"batch {n} (train.batch_size={b} is more than the {n} training pairs)"
        )
        k = cfg.pairs.hard_negatives if cfg.loss.name == "info_nce" else 0
        negatives = f"{k} hard negatives"
        given = sum(len(p.negatives) for p in self.train_pairs)
        if given and not k:
            why = (
                "pairs.hard_negatives=0"
                if cfg.loss.name == "info_nce"
                else "loss.name=siglip uses in-batch pairs"
            )
            negatives += f" (the {given} negatives given in the data are not used: {why})"
        return (
            f"retrieval: {what} {run_dir} on {device}; data {cfg.data.name}: {n} train pairs, "
            f"{len(self.val.queries)} validation and {len(self.test.queries)} test queries against "
            f"{len(self.test.docs)} documents; encoder {m.encoder} ({towers}), {cfg.train.epochs} epochs, "
            f"{batch}, {negatives}, loss {cfg.loss.name}, temperature {cfg.loss.temperature}; best.pt by "
            f"{self.selection()}"
        )

    def plots(self, run_dir: Path, records, baselines, final, extra) -> dict[str, Path]:
        from .. import plots

        with limit_threads(self.cfg.eval.threads):
            paths = {"loss_plot": plots.plot_loss(records, run_dir / "loss.png")}
            paths["mrr_plot"] = _plot_systems(
                self._rows(list(baselines.items()) + [("trained encoder", final)]), run_dir / "mrr.png"
            )
        return paths

    def export(self, run_dir: Path, model: nn.Module) -> dict[str, Path]:
        """A Hugging Face encoder with one shared tower is also written as a sentence-transformers
        model, ``run_dir/"model"`` (``SentenceTransformer(run_dir / "model")`` loads it; its
        ``encode`` is ``embed --side doc``: document length, unit rows); other encoders: nothing."""
        m = self.cfg.model
        if m.encoder != "hf" or not self.model.dual.shared:
            return {}
        from ..text.export import save_sentence_transformer

        folder = save_sentence_transformer(
            self.model.dual.query_tower, self.tokenizer, run_dir / "model", m.doc_length
        )
        return {"sentence_transformers": folder}

    def summary_extra(self) -> dict[str, Any]:
        return {
            "fused": getattr(self, "fused", {}),
            "corpus": self.meta,
            "best_checkpoint_by": self.selection(),
        }

    @staticmethod
    def _rows(rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name, m in rows:
            out.append((_LABELS.get(name, name), m))
            if "fused_mrr_at_10" in m:
                out.append(
                    ("BM25 + " + name.split(" (")[0] + " (RRF)", {k: m[f"fused_{k}"] for k in METRICS})
                )
        return out

    def table(self, rows: list[tuple[str, dict[str, Any]]]) -> str:
        cols = [
            ("mrr_at_10", "MRR@10 %"),
            ("recall_at_1", "R@1 %"),
            ("recall_at_10", "R@10 %"),
            ("ndcg_at_10", "nDCG@10 %"),
        ]
        return "\n" + format_table(self._rows(rows), cols) + "\n"

    def encoder_of(self, model: nn.Module) -> nn.Module:
        return model


def _plot_systems(rows: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    with needs("train", "the plots"):
        import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, _ in rows]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    y = list(range(len(rows)))
    ax.barh(y, [m["mrr_at_10"] for _, m in rows], color="tab:blue", label="MRR@10")
    ax.barh(
        [v + 0.35 for v in y],
        [m["recall_at_10"] for _, m in rows],
        height=0.35,
        color="tab:orange",
        label="Recall@10",
    )
    ax.set_yticks([v + 0.15 for v in y], names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="center right")
    ax.set_title("test split, every query against the whole test corpus", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _read_texts(spec: str, task: RetrievalTask, side: str) -> list[str]:
    if spec in ("train", "validation", "test"):
        split = {"train": task.tr, "validation": task.val, "test": task.test}[spec]
        if not split.queries:
            raise ValueError(
                f"--data {spec}: this run has no {spec} split (data.validation_fraction=0 or too few pairs); "
                f"pass train, test or a file"
            )
        return split.queries if side == "query" else split.docs
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"--data {spec!r}: no such file; pass train, validation, test, a JSONL file "
            f'({{"text": ...}} or {{"query": ...}} lines) or a text file with one text per line'
        )
    return TC.read_texts(spec, side)


def embed_data(
    run_dir,
    spec: str,
    checkpoint: str = "last",
    batch_size: int = 512,
    side: str = "doc",
    *,
    allow_changed_data: bool = False,
):
    """``contrastive embed`` for retrieval runs: ``(N, dim)`` float32 array of the texts ``spec``
    names (a split of the run, or a file: see :func:`contrastive.train.text.corpus.read_texts`;
    a file needs no training data)."""
    if side not in ("query", "doc"):
        raise ValueError(f"side must be 'query' or 'doc', got {side!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    split_spec = spec in ("train", "validation", "test")
    task, model, _, _ = loop.load_task(
        RetrievalTask,
        RetrievalConfig,
        run_dir,
        checkpoint,
        data=split_spec,
        allow_changed_data=allow_changed_data,
    )
    texts = _read_texts(spec, task, side)
    if not texts:
        raise ValueError(f"--data {spec!r} holds no texts")
    task.cfg = dataclasses.replace(task.cfg, eval=dataclasses.replace(task.cfg.eval, batch_size=batch_size))
    return task.embed_texts(model, texts, side).numpy()


def search(
    run_dir, query, k: int = 10, checkpoint: str = "last", *, allow_changed_data: bool = False
) -> list[tuple[float, str]] | list[list[tuple[float, str]]]:
    """The ``k`` test-corpus documents a run's trained encoder ranks first for ``query``:
    ``[(score, text)]``, best first; for a list of queries, one such list per query. The
    corpus's embeddings are cached: :func:`contrastive.train.text.search.search_run`."""
    queries = check_queries(query)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    task, model, _, _ = loop.load_task(  # the model only: the corpus comes from the cache if it can
        RetrievalTask, RetrievalConfig, run_dir, checkpoint, data=False, allow_changed_data=allow_changed_data
    )
    hits = search_run(task, model, run_dir, checkpoint, queries, k)
    return hits[0] if isinstance(query, str) else hits


RECIPE = Recipe.of(
    RetrievalTask,
    RetrievalConfig,
    "dense retrieval: two towers, in-batch + BM25 hard negatives, against BM25",
    embed=embed_data,
    search=search,
)
train, evaluate_run, load_encoder = RECIPE.train, RECIPE.evaluate, RECIPE.load_encoder
