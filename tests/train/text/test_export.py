"""train/text/export.py: a Hugging Face tower saved so that sentence-transformers loads it and
embeds as the tower does."""

from __future__ import annotations

import pytest
import torch

from contrastive.train.text.encoders import BagEncoder, HFEncoder
from contrastive.train.text.export import save_sentence_transformer

transformers = pytest.importorskip("transformers")

WORDS = ["read", "the", "file", "write", "a", "json", "document", "parse", "list", "sort"]


def _tiny_bert(folder):
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
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
    return folder


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_sentence_transformers_loads_it_and_embeds_the_same(tmp_path, pooling):
    st = pytest.importorskip("sentence_transformers")
    src = _tiny_bert(tmp_path / "bert")
    enc = HFEncoder(str(src), pooling).eval()
    with torch.no_grad():  # a trained tower differs from its initialisation
        for p in enc.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tok = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
    out = save_sentence_transformer(enc, tok, tmp_path / "model", max_seq_length=32)
    texts = ["read the file", "parse a json document please", "sort"]
    batch = tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = torch.nn.functional.normalize(enc(dict(batch)), dim=1)
    model = st.SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 32
    theirs = torch.from_numpy(model.encode(texts))
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_only_a_hugging_face_tower_is_saved(tmp_path):
    with pytest.raises(TypeError, match="model.encoder=hf"):
        save_sentence_transformer(BagEncoder(20, dim=4), None, tmp_path / "m", 16)
    src = _tiny_bert(tmp_path / "bert")
    tok = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
    with pytest.raises(ValueError, match="max_seq_length"):
        save_sentence_transformer(HFEncoder(str(src)), tok, tmp_path / "m", 0)
