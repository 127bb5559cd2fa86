"""Partitions of :mod:`.blockloss`: a row's softmax, or Robinson et al.'s hard-negative estimator.

A partition of row i has accumulators lse_k_i = log sum_j exp(sigma_k L_ij) over its candidates
and turns them, with the positive logit l_i = s_ii / tau, into the row's loss term f_i.

Softmax (sigma = 1, candidates include the positive): f_i = lse_i - l_i.

HCL (Robinson, Chuang, Sra, Jegelka 2021, the authors' reference code ``joshr17/HCL``), over
row i's n_i negatives only, with beta >= 0, 0 <= tau+ < 1 and accumulators
A_i = lse_j (1 + beta) L_ij, B_i = lse_j beta L_ij (sigma = 1 + beta and beta):

    imp_ij = exp(beta L_ij) / mean_j exp(beta L_ij)          (not detached)
    R_i    = sum_j imp_ij exp(L_ij) = n_i exp(A_i - B_i)
    Ng_i   = max((R_i - tau+ n_i e^{l_i}) / (1 - tau+), n_i e^{-1/tau})
    f_i    = log(e^{l_i} + Ng_i) - l_i

computed in log space (no overflow at small tau). Derivatives, kappa_i = 1 / (e^{l_i} + Ng_i):
where the clamp does not bind, dA_i = -dB_i = kappa_i R_i / (1 - tau+) and
dl_i = -Ng_i kappa_i - kappa_i tau+ n_i e^{l_i} / (1 - tau+); where it binds (strictly below the
floor, as torch.clamp's gradient), dA = dB = 0, dl_i = -Ng_i kappa_i and the floor's own
dependence on the temperature, d f_i / d(1/tau) = -Ng_i kappa_i, joins the temperature gradient.
The pass-2 coefficient of accumulator k is d f / d lse_k times sigma_k (the chain through
sigma_k L).
"""

from __future__ import annotations

import math

import torch


class Partition:
    """One partition: ``kind`` ``'softmax'`` or ``'hcl'``, ``weight`` c (the row loss is
    sum c f), and for HCL ``beta``, ``tau_plus`` and the negative counts ``n_neg`` ``(n,)``."""

    def __init__(
        self,
        weight: float,
        kind: str = "softmax",
        beta: float = 0.0,
        tau_plus: float = 0.0,
        n_neg: torch.Tensor | None = None,
    ):
        self.weight, self.kind, self.beta, self.tau_plus, self.n_neg = weight, kind, beta, tau_plus, n_neg
        self.scales = (1.0,) if kind == "softmax" else (1.0 + beta, beta)

    def _hcl(self, lse, ell, t):
        A, Bm = lse
        n = self.n_neg.to(ell.dtype)  # type: ignore[union-attr]
        logn = n.log()
        logR = logn + A - Bm  # log sum_j imp_ij e^{L_ij}
        tp = self.tau_plus
        if tp == 0.0:
            raw = logR
        else:
            lp = math.log(tp) + logn + ell  # log(tau+ n e^{l})
            m = torch.maximum(logR, lp)
            q = torch.exp(logR - m) - torch.exp(lp - m)
            raw = torch.where(q > 0, m + q.clamp_min(torch.finfo(q.dtype).tiny).log(), -math.inf)
            raw = raw - math.log1p(-tp)
        logF = logn - t  # log(n e^{-1/tau})
        bind = raw < logF
        logNg = torch.where(bind, logF, raw)
        lae = torch.logaddexp(ell, logNg)  # log(e^l + Ng)
        return logR, bind, logNg, lae

    def loss(self, lse: list[torch.Tensor], ell: torch.Tensor, t: float) -> torch.Tensor:
        """The row terms f ``(n,)`` from the accumulators and the positive logits."""
        if self.kind == "softmax":
            return lse[0] - ell
        _, _, _, lae = self._hcl(lse, ell, t)
        return lae - ell

    def derivs(
        self, lse: list[torch.Tensor], ell: torch.Tensor, t: float, cw: torch.Tensor
    ) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor]:
        """For weights cw: the pass-2 coefficients per accumulator (d/d lse_k times sigma_k, or
        ``None``), d/d l ``(n,)``, and the direct d/d(inv_temp) (a scalar)."""
        if self.kind == "softmax":
            return [cw], -cw, ell.new_zeros(())
        logR, bind, logNg, lae = self._hcl(lse, ell, t)
        tp, beta = self.tau_plus, self.beta
        sig = torch.exp(logNg - lae)  # Ng kappa
        dA = torch.where(bind, 0.0, torch.exp(logR - lae) / (1.0 - tp))  # kappa R / (1 - tau+)
        d_ell = -sig
        if tp > 0.0:
            n = self.n_neg.to(ell.dtype)  # type: ignore[union-attr]
            extra = tp * n * torch.exp(ell - lae) / (1.0 - tp)  # kappa tau+ n e^l / (1 - tau+)
            d_ell = d_ell - torch.where(bind, 0.0, extra)
        d_t = (cw * torch.where(bind, -sig, 0.0)).sum()  # the floor n e^{-inv_temp}
        c_b = None if beta == 0.0 else -cw * dA * beta
        return [cw * dA * (1.0 + beta), c_b], cw * d_ell, d_t
