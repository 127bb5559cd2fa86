"""contrastive.integrations.sentence_transformers against sentence-transformers 6.3 itself.

Every drop-in and sentence-transformers' own loss of the same name run on the same model state
and batch (a tiny randomly initialised BERT with a word-level tokenizer built here, no
download; and a StaticEmbedding model): the loss and every parameter gradient agree, float64
to 1e-10 and float32 to 1e-5, back-propagated with grad_output != 1. The tests of the engine
keywords that another branch adds (``directions``, ``guide``, ``matryoshka_dims``, ...) skip,
naming the keyword, while ``contrastive.functional.retrieval_loss`` lacks it.
"""

from __future__ import annotations

import functools
import random
import subprocess
import sys

import pytest
import torch

st = pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.base.modules.transformer import Transformer  # noqa: E402
from sentence_transformers.sentence_transformer import losses as st_losses  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding  # noqa: E402
from sentence_transformers.util import cos_sim, dot_score  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast  # noqa: E402

from contrastive.integrations import sentence_transformers as ours  # noqa: E402

WORDS = "the a cat dog sat on mat ran fast slow big small red blue house car tree river sun rain".split()
TEXTS = [
    "the cat sat on the mat",
    "a dog ran fast",
    "big red house",
    "the small blue car",
    "a tree by the river",
    "sun and rain",
    "the dog sat",
    "a cat ran on the big mat",
    "slow river",
    "the red car ran fast",
    "a small house by a tree",
    "blue sun",
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# ----------------------------------------------------------------------------- models
def _tokenizer():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    vocab.update({w: i + 5 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok, vocab


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers, no dropout) and its tokenizer, saved once."""
    tok, vocab = _tokenizer()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def bert(path, dtype=torch.float64):
    model = SentenceTransformer(
        modules=[Transformer(path, max_seq_length=16), Pooling(32, "mean")], device="cpu"
    )
    return model.to(dtype)


def static(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = SentenceTransformer(modules=[StaticEmbedding(_tokenizer()[0], embedding_dim=16)], device="cpu")
    return model.to(dtype)


def batch(model, columns, offset=0, rows=6, duplicate=False):
    """``columns`` columns of ``rows`` texts each, tokenised by the model."""
    texts = [[TEXTS[(offset + c * rows + i) % len(TEXTS)] for i in range(rows)] for c in range(columns)]
    if duplicate:  # a repeated anchor and a repeated positive
        texts[0][1] = texts[0][0]
        texts[1][3] = texts[1][0]
    return [model.preprocess(t) for t in texts]


def run(loss, model, features, g=0.7):
    """The loss value and every parameter's gradient of ``g * loss``."""
    model.zero_grad(set_to_none=True)
    value = loss([dict(f) for f in features], None)
    (g * value).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads


def err(a, b):
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def assert_same(theirs, mine, dtype):
    (v1, g1), (v2, g2) = theirs, mine
    assert err(v2, v1) <= TOL[dtype], (float(v1), float(v2))
    assert set(g1) == set(g2) and g1
    bad = {n: err(g2[n], g1[n]) for n in g1 if not err(g2[n], g1[n]) <= TOL[dtype]}
    assert not bad, bad


def compare(make_theirs, make_mine, model, features, dtype):
    assert_same(run(make_theirs(model), model, features), run(make_mine(model), model, features), dtype)


# ----------------------------------------------------------------------------- MNRL
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("columns", [2, 3, 5])
def test_mnrl_matches_sentence_transformers(bert_dir, columns, dtype):
    model = bert(bert_dir, dtype)
    compare(
        st_losses.MultipleNegativesRankingLoss,
        ours.MultipleNegativesRankingLoss,
        model,
        batch(model, columns),
        dtype,
    )


@pytest.mark.parametrize("similarity, scale", [(cos_sim, 7.0), (dot_score, 1.0)])
def test_mnrl_similarities_and_scale(bert_dir, similarity, scale):
    model = bert(bert_dir)
    kw = dict(scale=scale, similarity_fct=similarity)
    compare(
        lambda m: st_losses.MultipleNegativesRankingLoss(m, **kw),
        lambda m: ours.MultipleNegativesRankingLoss(m, **kw),
        model,
        batch(model, 3),
        torch.float64,
    )


@pytest.mark.parametrize("columns", [2, 3])
def test_mnrl_duplicate_texts_are_negatives_as_in_sentence_transformers(bert_dir, columns):
    model = bert(bert_dir)
    features = batch(model, columns, duplicate=True)
    compare(
        st_losses.MultipleNegativesRankingLoss,
        ours.MultipleNegativesRankingLoss,
        model,
        features,
        torch.float64,
    )


def test_mnrl_static_embedding(bert_dir):
    model = static()
    compare(
        st_losses.MultipleNegativesRankingLoss,
        ours.MultipleNegativesRankingLoss,
        model,
        batch(model, 3),
        torch.float64,
    )


@pytest.mark.parametrize(
    "directions, mode",
    [
        (("query_to_doc", "doc_to_query"), "per_direction"),
        (("query_to_doc", "doc_to_query"), "joint"),
        (("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
    ],
)
@pytest.mark.parametrize("columns", [2, 3])
def test_mnrl_directions(bert_dir, directions, mode, columns):
    model = bert(bert_dir)
    kw = dict(directions=directions, partition_mode=mode)
    compare(
        lambda m: st_losses.MultipleNegativesRankingLoss(m, **kw),
        lambda m: ours.MultipleNegativesRankingLoss(m, **kw),
        model,
        batch(model, columns),
        torch.float64,
    )


@pytest.mark.parametrize("mode", ["in_batch_negatives", "hard_negatives", "all_negatives"])
def test_mnrl_hardness(bert_dir, mode):
    model = bert(bert_dir)
    kw = dict(hardness_mode=mode, hardness_strength=5.0)
    compare(
        lambda m: st_losses.MultipleNegativesRankingLoss(m, **kw),
        lambda m: ours.MultipleNegativesRankingLoss(m, **kw),
        model,
        batch(model, 3),
        torch.float64,
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(scale=0.0),
        dict(directions=()),
        dict(directions=("doc_to_query",)),
        dict(directions=("query_to_doc", "sideways")),
        dict(partition_mode="mixed"),
        dict(directions=("query_to_doc", "doc_to_doc"), partition_mode="per_direction"),
        dict(hardness_mode="hardest"),
        dict(hardness_strength=-1.0),
    ],
)
def test_mnrl_refuses_what_sentence_transformers_refuses(bert_dir, kw):
    model = static()
    with pytest.raises(ValueError):
        st_losses.MultipleNegativesRankingLoss(model, **kw)
    with pytest.raises(ValueError):
        ours.MultipleNegativesRankingLoss(model, **kw)
    with pytest.raises(ValueError):
        ours.CachedMultipleNegativesRankingLoss(bert(bert_dir), **kw)


def test_mnrl_refuses_other_similarities_naming_the_supported_ones():
    model = static()
    with pytest.raises(ValueError, match="cos_sim or sentence_transformers.util.dot_score"):
        ours.MultipleNegativesRankingLoss(model, similarity_fct=st.util.manhattan_sim)
    with pytest.raises(ValueError, match="Expected at least 2 embeddings"):
        ours.MultipleNegativesRankingLoss(model)(batch(model, 1), None)


def test_config_citation_and_temperature_match_sentence_transformers():
    model = static()
    for kw in [{}, dict(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")]:
        a, b = (
            st_losses.MultipleNegativesRankingLoss(model, **kw),
            ours.MultipleNegativesRankingLoss(model, **kw),
        )
        assert a.get_config_dict() == b.get_config_dict() and a.citation == b.citation
        assert a.temperature == b.temperature
    m = static()
    assert ours.MatryoshkaLoss(m, ours.MultipleNegativesRankingLoss(m), [16, 8]).get_config_dict() == (
        st_losses.MatryoshkaLoss(m, st_losses.MultipleNegativesRankingLoss(m), [16, 8]).get_config_dict()
    )


# ----------------------------------------------------------------------------- Cached MNRL
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("columns", [2, 3, 5])
def test_cached_mnrl_matches_sentence_transformers(bert_dir, columns, dtype):
    model = bert(bert_dir, dtype)
    kw = dict(mini_batch_size=4)  # 6 rows per column: 2 chunks
    compare(
        lambda m: st_losses.CachedMultipleNegativesRankingLoss(m, **kw),
        lambda m: ours.CachedMultipleNegativesRankingLoss(m, **kw),
        model,
        batch(model, columns, duplicate=columns == 3),
        dtype,
    )


def test_cached_mnrl_equals_plain_mnrl_and_defers_the_encoder_backward(bert_dir):
    model = bert(bert_dir)
    features = batch(model, 3)
    plain = run(ours.MultipleNegativesRankingLoss(model), model, features)
    model.zero_grad(set_to_none=True)
    loss = ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=2)(
        [dict(f) for f in features], None
    )
    assert all(p.grad is None for p in model.parameters())  # pass 2 waits for backward
    (0.7 * loss).backward()
    cached = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert_same(plain, cached, torch.float64)
    with torch.no_grad():  # evaluation: the value, no cache
        value = ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=4)(
            [dict(f) for f in features], None
        )
    assert err(value, plain[0]) <= 1e-10


def test_cached_mnrl_refusals(bert_dir):
    with pytest.raises(ValueError, match="StaticEmbedding"):
        st_losses.CachedMultipleNegativesRankingLoss(static())
    with pytest.raises(ValueError, match="StaticEmbedding"):
        ours.CachedMultipleNegativesRankingLoss(static())
    model = bert(bert_dir)
    with pytest.raises(ValueError, match="mini_batch_num_tokens"):
        ours.CachedMultipleNegativesRankingLoss(model, mini_batch_num_tokens=0)
    with pytest.raises(NotImplementedError, match="mini_batch_size"):
        ours.CachedMultipleNegativesRankingLoss(model, mini_batch_num_tokens=64)
    with pytest.raises(ValueError, match="mini_batch_size"):
        ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=0)
    with pytest.raises(ValueError, match="at least 2 inputs"):
        ours.CachedMultipleNegativesRankingLoss(model)(batch(model, 1), None)
    wrapped = st_losses.MatryoshkaLoss(model, ours.CachedMultipleNegativesRankingLoss(model), [32, 16])
    with pytest.raises(ValueError, match="contrastive.integrations.sentence_transformers.MatryoshkaLoss"):
        wrapped(batch(model, 2), None)
    loss = ours.CachedMultipleNegativesRankingLoss(model)
    loss.scale = 5.0  # delegated to the wrapped loss, as in sentence-transformers
    assert loss.loss.scale == 5.0 and loss.temperature == 0.2
    assert (
        loss.get_config_dict()
        == st_losses.CachedMultipleNegativesRankingLoss(model, scale=5.0).get_config_dict()
    )


# ----------------------------------------------------------------------------- GIST
def test_gist_refusals(bert_dir):
    model, guide = bert(bert_dir), bert(bert_dir)
    for cls in (st_losses.GISTEmbedLoss, ours.GISTEmbedLoss):
        with pytest.raises(ValueError, match="margin_strategy"):
            cls(model, guide, margin_strategy="percent")
        with pytest.raises(ValueError, match="PreTrainedTokenizer"):
            cls(static(), guide)
    loss = ours.GISTEmbedLoss(model, guide)
    assert loss.get_config_dict() == st_losses.GISTEmbedLoss(model, guide).get_config_dict()
    assert loss.citation == st_losses.GISTEmbedLoss(model, guide).citation


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("columns", [2, 3])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(margin_strategy="absolute", margin=0.05, contrast_anchors=False),
        dict(margin_strategy="relative", margin=0.1, contrast_positives=False, temperature=0.05),
    ],
)
def test_gist_matches_sentence_transformers(bert_dir, columns, dtype, kw):
    if dtype == torch.float32:
        # at the default temperature 0.01 the logits are 100 x the cosines, and float32 rounding
        # alone (of either implementation) moves the gradients by ~2e-5
        kw = {**kw, "temperature": 0.05}
    model = bert(bert_dir, dtype)
    torch.manual_seed(1)
    guide = bert(bert_dir, dtype)
    for p in guide.parameters():  # a guide that differs from the model
        p.data.add_(0.05 * torch.randn_like(p))
    compare(
        lambda m: st_losses.GISTEmbedLoss(m, guide, **kw),
        lambda m: ours.GISTEmbedLoss(m, guide, **kw),
        model,
        batch(model, columns, duplicate=True),
        dtype,
    )


# ----------------------------------------------------------------------------- Matryoshka
def _matryoshka(inner, dims=(32, 16, 8), weights=(1.0, 0.5, 2.0), n=-1):
    def make(module):
        def build(m):
            return module.MatryoshkaLoss(m, inner(module, m), list(dims), list(weights), n)

        return build

    return make(st_losses), make(ours)


@pytest.mark.parametrize(
    "inner",
    [
        lambda mod, m: mod.MultipleNegativesRankingLoss(m),
        lambda mod, m: mod.MultipleNegativesRankingLoss(m, similarity_fct=dot_score, scale=1.0),
        lambda mod, m: mod.CachedMultipleNegativesRankingLoss(m, mini_batch_size=4),
    ],
    ids=["mnrl", "mnrl-dot", "cached"],
)
@pytest.mark.parametrize("n_dims_per_step", [-1, 2])
def test_matryoshka_matches_sentence_transformers(bert_dir, inner, n_dims_per_step):
    model = bert(bert_dir)
    theirs, mine = _matryoshka(inner, n=n_dims_per_step)
    features = batch(model, 3)
    random.seed(3)  # the same draw of dimensions for both
    a = run(theirs(model), model, features)
    random.seed(3)
    b = run(mine(model), model, features)
    assert_same(a, b, torch.float64)


def test_matryoshka_around_gist(bert_dir):
    model, guide = bert(bert_dir), bert(bert_dir)
    theirs, mine = _matryoshka(lambda mod, m: mod.GISTEmbedLoss(m, guide), dims=(32, 8), weights=(1, 1))
    compare(theirs, mine, model, batch(model, 3), torch.float64)


def test_matryoshka_around_another_loss_is_sentence_transformers_own(bert_dir):
    model = bert(bert_dir)
    features = batch(model, 2)
    theirs, mine = _matryoshka(
        lambda mod, m: st_losses.MultipleNegativesRankingLoss(m), dims=(32, 16), weights=(1, 2)
    )
    compare(theirs, mine, model, features, torch.float64)
    for kw in [dict(matryoshka_dims=[]), dict(matryoshka_dims=[0, 8]), dict(matryoshka_dims=[64, 8])]:
        for mod in (st_losses, ours):
            with pytest.raises(ValueError):
                mod.MatryoshkaLoss(model, mod.MultipleNegativesRankingLoss(model), **kw)
    with pytest.raises(ValueError, match="same length"):
        ours.MatryoshkaLoss(model, ours.MultipleNegativesRankingLoss(model), [32, 8], [1.0])


# ----------------------------------------------------------------------------- the trainer
def test_trainer_trains_three_steps_and_saves_a_loadable_model(bert_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("accelerate")
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    model = bert(bert_dir, torch.float32)
    data = datasets.Dataset.from_dict({"anchor": TEXTS[:6], "positive": TEXTS[6:], "negative": TEXTS[3:9]})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for loss in [
        ours.MultipleNegativesRankingLoss(model),
        ours.MatryoshkaLoss(
            model, ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=1), [32, 16]
        ),
    ]:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / "out"),
            max_steps=3,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
        result = trainer.train()
        assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    model.save(str(tmp_path / "model"))
    loaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    torch.testing.assert_close(loaded.encode(TEXTS[:3]), model.encode(TEXTS[:3]))
    card = (tmp_path / "model" / "README.md").read_text()
    assert "CachedMultipleNegativesRankingLoss" in card or "MultipleNegativesRankingLoss" in card


# ----------------------------------------------------------------------------- distributed
def _dist_case(path, rank, world):
    """On each rank: sentence-transformers' MNRL and ours with gather_across_devices=True on
    this rank's share; loss and every parameter gradient (float64)."""
    import torch.distributed as dist

    errors = {}
    for columns in (2, 3):
        for cached in (False, True):
            model = bert(path)
            features = batch(model, columns, offset=5 * rank, rows=4)
            if cached:
                kw = dict(gather_across_devices=True, mini_batch_size=3)
                theirs, mine = (
                    st_losses.CachedMultipleNegativesRankingLoss,
                    ours.CachedMultipleNegativesRankingLoss,
                )
            else:
                kw = dict(gather_across_devices=True)
                theirs, mine = st_losses.MultipleNegativesRankingLoss, ours.MultipleNegativesRankingLoss
            (v1, g1), (v2, g2) = (
                run(theirs(model, **kw), model, features),
                run(mine(model, **kw), model, features),
            )
            name = f"columns={columns}/cached={cached}"
            errors[name + "/loss"] = err(v2, v1)
            local = ours.MultipleNegativesRankingLoss(model)([dict(f) for f in features], None)
            errors[name + "/gathered (differs from the local loss)"] = float(
                abs(float(local) - float(v2)) < 1e-6
            )
            errors[name + "/grads"] = max(err(g2[n], g1[n]) for n in g1)
            dist.barrier()
    for name, kw in {  # the features gathered: this rank's anchors against every rank's documents
        "gte4": dict(directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")),
        "two-way": dict(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"),
        "hardness": dict(hardness_mode="all_negatives", hardness_strength=2.0),
    }.items():
        model = bert(path)
        features = batch(model, 3, offset=5 * rank, rows=4)
        (v1, g1), (v2, g2) = (
            run(
                st_losses.MultipleNegativesRankingLoss(model, gather_across_devices=True, **kw),
                model,
                features,
            ),
            run(ours.MultipleNegativesRankingLoss(model, gather_across_devices=True, **kw), model, features),
        )
        errors[f"{name}/loss"] = err(v2, v1)
        errors[f"{name}/grads"] = max(err(g2[n], g1[n]) for n in g1)
        dist.barrier()
    model = bert(path)
    features = batch(model, 2, offset=5 * rank, rows=4)
    (v1, g1), (v2, g2) = (
        run(
            st_losses.MatryoshkaLoss(
                model, st_losses.MultipleNegativesRankingLoss(model, gather_across_devices=True), [32, 16]
            ),
            model,
            features,
        ),
        run(
            ours.MatryoshkaLoss(
                model, ours.MultipleNegativesRankingLoss(model, gather_across_devices=True), [32, 16]
            ),
            model,
            features,
        ),
    )
    errors["matryoshka/loss"] = err(v2, v1)
    errors["matryoshka/grads"] = max(err(g2[n], g1[n]) for n in g1)
    try:
        ours.GISTEmbedLoss(bert(path), bert(path), gather_across_devices=True)(batch(bert(path), 2), None)
        errors["gist refused"] = 1.0
    except NotImplementedError as e:
        errors["gist refused"] = 0.0 if "not supported" in str(e) else 1.0
    return errors


def test_gather_across_devices_on_two_gloo_ranks(bert_dir):
    from tests.test_distributed import check_all_ok, spawn

    out = spawn(2, functools.partial(_dist_case, bert_dir), deadline=300)
    check_all_ok(out, 2)


# ----------------------------------------------------------------------------- packaging
def test_missing_sentence_transformers_says_how_to_install():
    code = (
        "import sys; sys.modules['sentence_transformers'] = None\n"
        "import contrastive, contrastive.integrations\n"
        "try:\n"
        "    import contrastive.integrations.sentence_transformers\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "contrastive[sentence-transformers]"' in out


def test_importing_contrastive_imports_no_integration_package():
    code = "import sys, contrastive, contrastive.integrations; print('sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
