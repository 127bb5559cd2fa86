"""The retrieval recipe's loss flags (``--loss.directions``, ``partition_mode``, ``hardness_mode``
/ ``hardness_strength``, ``hcl_beta`` / ``hcl_tau_plus``, ``matryoshka_dims`` / ``weights``):
each reaches :func:`contrastive.retrieval_loss` and gives its value; bad values and the removed
``--loss.symmetric`` are one-line config errors (retrieval_config.py, the recipe's configuration)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastive import retrieval_loss
from contrastive.cli import main
from contrastive.train.config import ConfigError, apply_overrides
from contrastive.train.recipes import retrieval as R

from .test_retrieval import TINY, _args, _pairs, _write_jsonl

CASES = [
    ({"loss.directions": "query_to_doc,doc_to_query", "loss.partition_mode": "per_direction"},
     {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}),
    ({"loss.directions": "query_to_doc,doc_to_query,query_to_query,doc_to_doc"},
     {"directions": ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc"), "partition_mode": "joint"}),
    ({"loss.hardness_mode": "all_negatives", "loss.hardness_strength": 3.0},
     {"hardness_mode": "all_negatives", "hardness_strength": 3.0}),
    ({"loss.hcl_beta": 0.5, "loss.hcl_tau_plus": 0.1}, {"hcl_beta": 0.5, "hcl_tau_plus": 0.1}),
    ({"loss.matryoshka_dims": "16,8,4", "loss.matryoshka_weights": "1,0.5,0.25"},
     {"matryoshka_dims": [16, 8, 4], "matryoshka_weights": [1.0, 0.5, 0.25]}),
]  # fmt: skip


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flags")
    jsonl = _write_jsonl(tmp / "pairs.jsonl", _pairs(80))
    cfg = apply_overrides(
        R.RetrievalConfig(),
        {
            **TINY,
            "run.root": str(tmp / "runs"),
            "data.name": "jsonl",
            "data.path": str(jsonl),
            "pairs.hard_negatives": 2,
        },
    )
    t = R.RetrievalTask(cfg)
    t.prepare()
    torch.manual_seed(0)
    t.build(torch.device("cpu")).double()
    return t


@pytest.mark.parametrize(("flags", "expected"), CASES)
def test_each_flag_reaches_the_loss(task, monkeypatch, flags, expected):
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return retrieval_loss(*args, **kwargs)

    monkeypatch.setattr(R, "retrieval_loss", spy)
    cfg = task.cfg
    monkeypatch.setattr(task, "cfg", apply_overrides(cfg, flags))
    batch = task.batch(torch.arange(16), torch.device("cpu"))
    q, d = task.embed(task.model, batch.inputs)
    got = task.loss((q, d), batch)
    kwargs = seen[-1]  # (the config check calls it too, on a dummy batch)
    assert {k: kwargs[k] for k in expected} == expected
    # the value is that of retrieval_loss called by hand with these arguments (and differs
    # from the default loss: the flag changes what is computed)
    qn, dn = F.normalize(q, dim=1), F.normalize(d, dim=1)
    b = len(batch.targets)
    want = retrieval_loss(qn, dn[:b], dn[b:], 0.05, **expected, positive_ids=batch.targets)
    plain = retrieval_loss(qn, dn[:b], dn[b:], 0.05, positive_ids=batch.targets)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, plain)
    got.backward()  # and it trains: finite gradients reach the encoder
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    task.model.zero_grad()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"loss.symmetric": "true"}, "loss.directions=query_to_doc,doc_to_query"),
        ({"loss.directions": "doc_to_query"}, "must include 'query_to_doc'"),
        ({"loss.directions": "query_to_doc,sideways"}, "unknown names ['sideways']"),
        ({"loss.directions": "query_to_doc,doc_to_doc", "loss.partition_mode": "per_direction"}, "joint"),
        ({"loss.partition_mode": "both"}, "loss.partition_mode"),
        ({"loss.hardness_mode": "hard"}, "loss.hardness_mode"),
        (
            {"loss.hardness_mode": "hard_negatives", "loss.hardness_strength": -1},
            "hardness_strength must be >= 0",
        ),
        ({"loss.hcl_beta": -0.5}, "loss.hcl_beta"),
        ({"loss.hcl_tau_plus": 0.2}, "needs hcl_beta"),
        ({"loss.hcl_beta": 1.0, "loss.hcl_tau_plus": 1.0}, "hcl_tau_plus must be in [0, 1)"),
        (
            {"loss.hcl_beta": 1.0, "loss.directions": "query_to_doc,doc_to_query"},
            "directions=('query_to_doc',) only",
        ),
        ({"loss.matryoshka_dims": "16,x"}, "comma-separated ints"),
        ({"loss.matryoshka_dims": "16,0"}, "positive prefix dimensions"),
        ({"loss.matryoshka_dims": "16,8", "loss.matryoshka_weights": "1"}, "one weight per dim"),
        ({"loss.matryoshka_weights": "1"}, "without matryoshka_dims"),
        ({"loss.name": "siglip", "loss.hardness_mode": "in_batch_negatives"}, "siglip takes none"),
        ({"loss.matryoshka_dims": "512,64"}, "wider than the embeddings (model.dim = 256)"),
    ],
)
def test_bad_values_are_one_line_config_errors(flags, words):
    with pytest.raises(ConfigError) as err:
        apply_overrides(R.RetrievalConfig(), flags)
    assert words in str(err.value) and len(str(err.value).splitlines()) == 1


def test_removed_symmetric_flag_on_the_command_line(tmp_path, capsys):
    assert main(["train", "retrieval", *_args(tmp_path, **{"loss.symmetric": "true"})]) == 2
    err = capsys.readouterr().err
    assert (
        "loss.symmetric was removed" in err
        and "--loss.directions=" in err
        and len(err.strip().splitlines()) == 1
    )
    # an older run's config.toml holds symmetric = false: it still loads, meaning the default
    assert apply_overrides(R.RetrievalConfig(), {"loss.symmetric": False}).loss == R.RetrievalLossConfig()
