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
q_ap = sigmoid(neg_a - S_ap) = 1 - p_ap (tiles without a positive pair skip their product):
    loss_a += softplus(neg_a - S_ap),   Q_a += q_ap
Pass 3 (the gradient of sum_a w_a loss_a, upper tiles, positives and negatives together):
    D_ap = -w_a q_ap                            (positives: d loss_a / d S_ap)
    D_an = w_a Q_a exp(S_an - neg_a)            (negatives: d loss_a / d neg_a = Q_a, then the softmax)
    H = D_IJ + D_JI^T,  g_I += H Z_J,  g_J += H^T Z_I
grad_z = inv_temp g;  d/d(inv_temp) = sum_k z_k . grad_z_k / (2 inv_temp).
Tile products (each bs x bs x d, upper tiles only): one per tile in pass 1, one in pass 2, three
in pass 3: SupCon's four plus one. With 'none' pass 3 runs in backward, Q kept from forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import Blocks, rowdot
from .engine import Build, Grads, Objective, present
from .gemm import tile_mm
from .sym_tiles import max_sq_norm, sym_lse
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
        self.q_sum: torch.Tensor | None = None  # (N,) Q_a, made by pass 2

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        """The mean over positive pairs (pytorch-metric-learning's MeanReducer of pair losses)."""
        return like.new_full((self.n,), 1.0 / self.pairs if self.pairs else 0.0)

    def _positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 2: per-row losses l_a = sum_p softplus(neg_a - S_ap) and Q_a = sum_p q_ap, (N,) each."""
        z, cls, neg = self.z, self.cls, self.neg
        buf = TileBuffers(z.dtype, z.device)
        losses, q_sum = z.new_zeros(self.n), z.new_zeros(self.n)
        for i0, i1, j0, j1, zi, _, z_j in walk(z, z, self.inv_temp, self.bs, buf, upper=True):
            pos = cls[i0:i1, None] == cls[None, j0:j1]  # (m, n) equal labels
            pos.diagonal(i0 - j0).fill_(False)  # self is not a positive (empty off the diagonal)
            if not bool(pos.any()):
                continue
            S = tile_mm(zi, z_j, buf.get("S", i1 - i0, j1 - j0))  # S_IJ
            _accumulate(losses, q_sum, pos, neg[i0:i1, None] - S, 1, slice(i0, i1))  # anchors in I
            if i0 != j0:  # a diagonal tile holds (a, p) and (p, a): its rows cover every pair
                _accumulate(losses, q_sum, pos, neg[None, j0:j1] - S, 0, slice(j0, j1))  # anchors in J
        return losses, q_sum

    def losses(self) -> torch.Tensor:
        losses, self.q_sum = self._positives()  # Q is kept for the gradient pass ('none': backward)
        return losses

    def grad(self, w: torch.Tensor) -> Grads:
        """Pass 3: d(sum_a w_a l_a)/dz, one tile pass over positives and negatives together."""
        z, cls, inv_temp = self.z, self.cls, self.inv_temp
        if self.q_sum is None:
            self.losses()
        assert self.q_sum is not None
        has = torch.isfinite(self.neg)  # rows with a negative
        c = self.c if self.fixed else 0.0
        nc = self.neg - c  # neg_a - c: q_ap = sigmoid(nc_a - T_ap), -inf (q = 0) without negatives
        wq = torch.where(has, w * self.q_sum, torch.zeros_like(w))  # d(sum w l)/d neg_a = w_a Q_a
        ln = torch.where(has, nc, torch.zeros_like(nc))  # finite stand-in where the weight is 0
        alpha = wq * torch.exp(-ln) if self.fixed else wq  # w_a Q_a / r_a, r_a = exp(neg_a - c)
        buf = TileBuffers(z.dtype, z.device)
        g = z.new_zeros(z.shape)  # (N, d)
        shift = z.new_full((1, 1), -c) if self.fixed else None
        for i0, i1, j0, j1, zi, z_i, z_j in walk(z, z, inv_temp, self.bs, buf, upper=True):
            T = tile_mm(zi, z_j, buf.get("T", i1 - i0, j1 - j0), shift)  # S_IJ (- c)
            same = cls[i0:i1, None] == cls[None, j0:j1]  # (m, n): not negatives
            # negatives, D_an = w_a Q_a exp(S_an - neg_a); H = D_IJ + D_JI^T on the tile
            if self.fixed:
                H = torch.exp(T) * (alpha[i0:i1, None] + alpha[None, j0:j1])  # E (a_I + a_J)
            else:
                H = wq[i0:i1, None] * torch.exp(T - ln[i0:i1, None])
                H.addcmul_(torch.exp(T - ln[None, j0:j1]), wq[None, j0:j1])
            H.masked_fill_(same, 0.0)
            same.diagonal(i0 - j0).fill_(False)  # now: the positives
            if bool(same.any()):  # positives, D_ap = -w_a q_ap, both orientations
                qs = w[i0:i1, None] * torch.sigmoid(nc[i0:i1, None] - T)
                qs.addcmul_(torch.sigmoid(nc[None, j0:j1] - T), w[None, j0:j1])
                H.sub_(torch.where(same, qs, 0.0))
            if i0 == j0:
                g[i0:i1].addmm_(H, z_i)  # H = D + D^T on a diagonal tile
            else:
                g[i0:i1].addmm_(H, z_j)  # g_I += (D_IJ + D_JI^T) Z_J
                g[j0:j1].addmm_(H.T, z_i)  # g_J += (D_IJ + D_JI^T)^T Z_I
        g.mul_(inv_temp)  # grad_z = (D + D^T) Z / tau
        d_inv = rowdot(z, g).sum() / (2 * inv_temp)  # d/d(inv_temp)
        return [g], d_inv, None


def _accumulate(
    losses: torch.Tensor, q_sum: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, dim: int, rows: slice
) -> None:
    """losses[rows] += sum of softplus(x) over the positive entries along ``dim``, and q_sum[rows]
    of sigmoid(x); x = neg_a - S_ap with the anchors a along the other dimension."""
    losses[rows] += torch.where(pos, -F.logsigmoid(-x), 0.0).sum(dim)  # softplus, exact for every x
    q_sum[rows] += torch.where(pos, torch.sigmoid(x), 0.0).sum(dim)  # q_ap = 1 - p_ap


def pair_nce_objective(labels: torch.Tensor, bs: int) -> Build:
    """The engine's ``build`` for pair NCE of one ``(N, d)`` input with ``labels`` ``(N,)``."""

    def build(zs, inv_temp, bias, needs):
        return PairNCEObjective(zs, inv_temp, bias, needs, labels, bs)

    return build
