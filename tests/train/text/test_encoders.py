"""train/text/encoders.py: padding-aware pooling and the dual encoder."""

from __future__ import annotations

import pytest
import torch

from contrastive.train.text.encoders import BagEncoder, DualEncoder, TransformerTextEncoder, masked_mean


def test_encoders_ignore_padding_and_dual_encoder_shares():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    for enc in (BagEncoder(20, 8, bigram_buckets=7, hidden=16), TransformerTextEncoder(20, 8, 1, 2, 16, 0.0)):
        enc.eval()
        torch.testing.assert_close(enc({"ids": ids}), enc({"ids": ids[:, :3]}))
    assert masked_mean(torch.ones(1, 2, 3), torch.zeros(1, 2)).abs().sum() == 0
    bag = BagEncoder(20, 8)
    dual = DualEncoder(bag, None, temperature=0.05, learn_temperature=True)
    assert dual.shared and torch.equal(dual.encode_queries({"ids": ids}), dual.encode_docs({"ids": ids}))
    assert dual.temperature().item() == pytest.approx(0.05) and dual.logit_scale.requires_grad
    with pytest.raises(ValueError, match="multiple of heads"):
        TransformerTextEncoder(20, 10, 1, 3)
