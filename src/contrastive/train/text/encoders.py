"""Text encoders for retrieval and the two-tower model around them.

Every encoder maps a batch dict of ``(B, L)`` tensors (``ids``, 0 = padding; or a Hugging
Face model's ``input_ids`` and ``attention_mask``) to ``(B, dim)`` embeddings:

- :class:`BagEncoder`: a weighted embedding bag over subword ids and hashed bigrams of
  adjacent ids, ``h = sum_t g_t e_t / sum_t g_t`` with a learned per-token gate
  ``g_t = exp(a_t + p_pos)`` (an idf the model learns, and optionally a weight per position),
  then ``h + MLP(h)``. Token dropout in
  training. Trains in minutes on two CPU cores.
- :class:`TransformerTextEncoder`: token + position embeddings, a small pre-norm transformer,
  mean pooling over the non-padding tokens.
- :class:`HFEncoder`: a local Hugging Face checkpoint (``AutoModel`` from a folder, no hub
  access) with mean or CLS pooling.

:class:`DualEncoder` holds a query tower and a document tower (the same module when
``shared``) and an optional learnable logit scale ``1 / tau``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..._optional import needs

__all__ = ["BagEncoder", "DualEncoder", "HFEncoder", "TransformerTextEncoder", "masked_mean"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(B, L, d)`` over the positions where ``mask`` ``(B, L)`` is nonzero.

    Examples:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [9.0]]]), torch.tensor([[1, 1, 0]]))
        tensor([[2.]])
    """
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, d)


class BagEncoder(nn.Module):
    """Gated bag of subword and hashed-bigram embeddings with a residual MLP.

    Args:
        vocab_size: number of token ids (0 is padding).
        dim: embedding size.
        bigram_buckets: hashed bigram slots (0: unigrams only).
        hidden: MLP hidden size (0: no MLP).
        token_dropout: probability of dropping each token in training.

    Examples:
        >>> enc = BagEncoder(50, dim=8, bigram_buckets=16, hidden=16)
        >>> enc({"ids": torch.tensor([[3, 4, 0], [5, 0, 0]])}).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        bigram_buckets: int = 0,
        hidden: int = 0,
        token_dropout: float = 0.0,
        positions: int = 0,
    ):
        super().__init__()
        if vocab_size < 2 or dim < 1 or bigram_buckets < 0 or hidden < 0 or not 0 <= token_dropout < 1:
            raise ValueError(
                f"need vocab_size >= 2, dim >= 1, bigram_buckets >= 0, hidden >= 0 and "
                f"token_dropout in [0, 1); got {vocab_size}, {dim}, {bigram_buckets}, {hidden}, "
                f"{token_dropout}"
            )
        self.vocab_size, self.buckets, self.token_dropout = vocab_size, bigram_buckets, token_dropout
        n = vocab_size + bigram_buckets
        self.embed = nn.Embedding(n, dim, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.gate = nn.Embedding(n, 1, padding_idx=0)  # a_t; the weight of token t is exp(a_t + p_pos)
        nn.init.zeros_(self.gate.weight)
        # p_pos: a learned weight per position (the last one shared by every later position), so
        # that the start of a text (a function's name and signature) can count for more
        self.position_gate = nn.Parameter(torch.zeros(positions)) if positions else None
        self.mlp = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden
            else None
        )
        if self.mlp is not None:
            last: nn.Linear = self.mlp[-1]  # type: ignore[assignment]
            nn.init.zeros_(last.weight)  # starts as the identity: the bag alone
            nn.init.zeros_(last.bias)
        self.dim = dim

    def _ids(self, ids: torch.Tensor):
        """Token ids (unigrams, then hashed bigrams) and their positions."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        if not self.buckets:
            return ids, pos
        a, b = ids[:, :-1], ids[:, 1:]  # (B, L-1) adjacent pairs
        h = (a * 1000003 + b) % self.buckets + self.vocab_size
        big = torch.where((a > 0) & (b > 0), h, torch.zeros_like(h))
        return torch.cat([ids, big], 1), torch.cat([pos, pos[:-1]])  # (B, 2L-1), (2L-1,)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, pos = self._ids(batch["ids"])  # (B, T), (T,)
        mask = ids > 0
        if self.training and self.token_dropout > 0:
            kept = mask & (torch.rand(ids.shape, device=ids.device) >= self.token_dropout)
            mask = torch.where(kept.any(1, keepdim=True), kept, mask)  # never drop every token of a text
        a = self.gate(ids).squeeze(-1)  # (B, T)
        if self.position_gate is not None:
            a = a + self.position_gate[pos.clamp_max(len(self.position_gate) - 1)]
        g = a.clamp(-10, 10).exp() * mask  # (B, T) token weights
        # sum_t g_t e_t without materialising (B, T, dim); padding rows of the table are zero
        h = nn.functional.embedding_bag(ids, self.embed.weight, mode="sum", per_sample_weights=g)  # (B, dim)
        h = h / g.sum(1, keepdim=True).clamp_min(1e-6)
        return h + self.mlp(h) if self.mlp is not None else h


class TransformerTextEncoder(nn.Module):
    """A small pre-norm transformer with mean pooling.

    Examples:
        >>> enc = TransformerTextEncoder(50, dim=16, layers=1, heads=2, max_length=8)
        >>> enc({"ids": torch.tensor([[3, 4, 0], [5, 0, 0]])}).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_length: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"dim ({dim}) must be a multiple of heads ({heads}); e.g. model.dim=128 model.heads=4"
            )
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dim, self.max_length = dim, max_length

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["ids"][:, : self.max_length]  # (B, L)
        mask = ids > 0
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))  # (B, L, dim)
        x = self.body(x, src_key_padding_mask=~mask)
        return masked_mean(self.norm(x), mask)  # (B, dim)


class HFEncoder(nn.Module):
    """A Hugging Face model from a local folder, pooled to one vector per text.

    Args:
        path: a folder with ``config.json``, the weights and the tokenizer files.
        pooling: ``mean`` (over the attention mask) or ``cls`` (the first token).
    """

    def __init__(self, path: str, pooling: str = "mean"):
        super().__init__()
        from pathlib import Path

        if pooling not in ("mean", "cls"):
            raise ValueError(f"model.pooling must be mean or cls, got {pooling!r}")
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(
                f"model.path={path!r} is not a Hugging Face model folder (no config.json); "
                f"save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
            )
        with needs("hf", "model.encoder=hf"):
            from transformers import AutoModel

        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.pooling = pooling
        self.dim = int(self.model.config.hidden_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        if self.pooling == "cls":
            return out[:, 0]  # (B, hidden)
        return masked_mean(out, batch["attention_mask"])  # (B, hidden)


class DualEncoder(nn.Module):
    """Query and document towers (one module when ``doc_tower`` is None) and a logit scale.

    ``logit_scale`` holds ``log(1 / tau)``; it is a parameter when ``learn_temperature``.
    """

    def __init__(
        self,
        query_tower: nn.Module,
        doc_tower: nn.Module | None = None,
        temperature: float = 0.05,
        learn_temperature: bool = False,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.query_tower = query_tower
        self.doc_tower = doc_tower
        value = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)

    @property
    def shared(self) -> bool:
        return self.doc_tower is None

    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_tower(batch)

    def encode_docs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.doc_tower or self.query_tower)(batch)

    def temperature(self) -> torch.Tensor:
        """``tau = exp(-logit_scale)``, clamped to [0.01, 1]."""
        return (-self.logit_scale).exp().clamp(0.01, 1.0)
