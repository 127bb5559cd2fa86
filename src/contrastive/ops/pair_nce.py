r"""NT-Xent with class labels as pytorch-metric-learning defines it ("pair NCE"): one InfoNCE term
per positive pair, against the anchor's negatives only, on the engine, O(N d) memory.

Rows z_i with labels y_i, S = inv_temp Z Z^T, P(a) = {p != a : y_p = y_a} (positives),
N(a) = {n : y_n != y_a} (negatives; neither self nor the other positives):

    neg_a  = log sum_{n in N(a)} exp S_an                       (-inf when N(a) is empty)
    loss_a = sum_{p in P(a)} -log(e^{S_ap} / (e^{S_ap} + e^{neg_a})) = sum_{p in P(a)} softplus(neg_a - S_ap)

'mean' averages over the P = sum_a |P(a)| pairs (0 when there is none). Neither InfoNCE (one
positive per row, all other rows as candidates) nor SupCon (the positives share one
denominator that holds them all). Derivation: docs/derivations/pair_nce.md.

Pass 1 (:func:`.sym_tiles.sym_lse` with the mask "equal labels", which holds self): neg (N,).
Pass 2 (the positives, upper tiles; entries with equal labels off the diagonal), with
q_ap = sigmoid(neg_a - S_ap) = 1 - p_ap:
    loss_a += softplus(neg_a - S_ap),   Q_a += q_ap
    dS_ap = -w_a q_ap,  g_I += dS_IJ Z_J,  g_J += dS_IJ^T Z_I    (weights w of sum_a w_a loss_a)
Pass 3 (the negatives, :func:`.sym_tiles.sym_grad` with lse = neg, weights w Q, same mask):
    dS_an = w_a Q_a exp(S_an - neg_a)     (d loss_a / d neg_a = Q_a, d neg_a / d S_an = softmax)
grad_z = inv_temp g;  d/d(inv_temp) = sum_k z_k . grad_z_k / (2 inv_temp).
Flops: 2 N^2 d (pass 1) + 3 N^2 d (pass 2) + 3 N^2 d (pass 3); tiles without a positive pair
skip pass 2's products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import Blocks, rowdot
from .engine import Build, Grads, Objective, present
from .gemm import tile_mm
from .sym_tiles import max_sq_norm, sym_grad, sym_lse
from .tiles import TileBuffers, TileMask, use_fixed_shift, walk


class PairNCEObjective(Objective):
    """pytorch-metric-learning's NT-Xent of z (N, d) with integer labels (N,)."""

    def __init__(
        self,
        zs: Sequence[Blocks | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        labels: torch.Tensor,
        bs: int,
    ):
        z = self.z = present(zs[0])  # (N, d)
        self.n = z.shape[0]
        self.inv_temp, self.bs = inv_temp, bs
        _, self.cls = torch.unique(labels.to(z.device), return_inverse=True)  # (N,) class index
        counts = torch.bincount(self.cls)  # (K,)
        self.pairs = int((counts * (counts - 1)).sum())  # P = sum_a |P(a)|
        self.mask = TileMask(row_key=self.cls, col_key=self.cls)  # equal labels (self too): not negatives
        self.c = inv_temp * max_sq_norm(z)
        self.fixed = use_fixed_shift(self.c, z.dtype)
        self.neg = sym_lse(z, inv_temp, self.c, self.mask, bs, self.fixed)  # (N,) pass 1

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """The mean over positive pairs (pytorch-metric-learning's MeanReducer of pair losses)."""
        return like.new_full((self.n,), 1.0 / self.pairs if self.pairs else 0.0)

    def _positives(
        self, w: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pass 2: per-row losses (N,), and with weights w also Q (N,) and the positives' part of
        the gradient of sum_a w_a loss_a divided by inv_temp (N, d)."""
        z, cls, neg = self.z, self.cls, self.neg
        buf = TileBuffers(z.dtype, z.device)
        losses = z.new_zeros(self.n)
        q_sum = z.new_zeros(self.n) if w is not None else None
        g = z.new_zeros(z.shape) if w is not None else None  # (N, d)
        for i0, i1, j0, j1, zi, z_i, z_j in walk(z, z, self.inv_temp, self.bs, buf, upper=True):
            pos = cls[i0:i1, None] == cls[None, j0:j1]  # (m, n) equal labels
            pos.diagonal(i0 - j0).fill_(False)  # self is not a positive (empty off the diagonal)
            if not bool(pos.any()):
                continue
            diag = i0 == j0  # the tile holds both (a, p) and (p, a): its rows cover every pair
            S = tile_mm(zi, z_j, buf.get("S", i1 - i0, j1 - j0))  # S_IJ
            X = neg[i0:i1, None] - S  # neg_a - S_ap, anchors in I
            losses[i0:i1] += torch.where(pos, -F.logsigmoid(-X), 0.0).sum(1)  # softplus, exact
            if not diag:
                Y = neg[None, j0:j1] - S  # neg_a - S_ap, anchors in J (transposed)
                losses[j0:j1] += torch.where(pos, -F.logsigmoid(-Y), 0.0).sum(0)
            if w is None or g is None or q_sum is None:
                continue
            H = torch.where(pos, torch.sigmoid(X), 0.0)  # q_ap, anchors in I
            q_sum[i0:i1] += H.sum(1)
            H.mul_(w[i0:i1, None])  # -dS_IJ = w_a q_ap
            if diag:
                g[i0:i1].addmm_(H + H.T, z_i, alpha=-1)  # g_I += (dS + dS^T) Z_I
                continue
            qy = torch.where(pos, torch.sigmoid(Y), 0.0)  # q_ap, anchors in J (transposed)
            q_sum[j0:j1] += qy.sum(0)
            H.addcmul_(qy, w[None, j0:j1])  # + (-dS_JI)^T
            g[i0:i1].addmm_(H, z_j, alpha=-1)  # g_I += (dS_IJ + dS_JI^T) Z_J
            g[j0:j1].addmm_(H.T, z_i, alpha=-1)  # g_J += (dS_IJ + dS_JI^T)^T Z_I
        return losses, q_sum, g

    def losses(self) -> torch.Tensor:
        return self._positives(None)[0]

    def losses_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, Grads]:
        z, inv_temp = self.z, self.inv_temp
        losses, q_sum, g = self._positives(w)
        assert q_sum is not None and g is not None  # weights given: gradients made
        has = torch.isfinite(self.neg)  # rows with a negative (the others: Q = 0, nothing to add)
        lse = torch.where(has, self.neg, torch.zeros_like(self.neg))
        wq = torch.where(has, w * q_sum, torch.zeros_like(q_sum))  # d(sum w loss)/d neg_a = w_a Q_a
        if bool((wq != 0).any()):
            sym_grad(z, inv_temp, self.c, lse, wq, self.mask, self.bs, self.fixed, out=g)  # pass 3
        g.mul_(inv_temp)
        d_inv = rowdot(z, g).sum() / (2 * inv_temp)  # d/d(inv_temp)
        return losses, ([g], d_inv, None)

    def grad(self, w: torch.Tensor) -> Grads:
        return self.losses_and_grad(w)[1]


def pair_nce_objective(labels: torch.Tensor, bs: int) -> Build:
    """The engine's ``build`` for pair NCE of one ``(N, d)`` input with ``labels`` ``(N,)``."""

    def build(zs, inv_temp, bias, needs):
        return PairNCEObjective(zs, inv_temp, bias, needs, labels, bs)

    return build
