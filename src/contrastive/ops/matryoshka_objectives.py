"""Matryoshka objectives on the prefix-aware tile of :mod:`.matryoshka`.

The softmax objectives (InfoNCE, SupCon, CLIP, retrieval) run unchanged on per-prefix views
(:class:`~.matryoshka.PrefixView`), one instance per prefix: their O(N d) parts (positives, class
sums) per prefix, their tile passes (:func:`.rect_tiles.rect_lse`, ``rect_grad``,
:func:`.sym_tiles.sym_lse`, ``sym_grad``) handed to the views' shared :class:`Joint`. Pass 1:
the first prefix's call computes every prefix's normalisers in one walk, the others read them.
Pass 2: each prefix's call is recorded and answered with a zero tile part (everything after it
in the objectives is linear in it), then one walk per recorded call does every prefix and adds
the tile parts. SigLIP's one pass uses :class:`~.matryoshka.PrefixTile` directly
(:class:`MatryoshkaSigLIP`). Derivation: docs/derivations/matryoshka.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .common import Blocks, Rows
from .engine import Build, Grads, Objective, OnePassObjective, present
from .matryoshka import Prefixes, PrefixRows, PrefixTile, PrefixView, joint_grad, joint_lse
from .tiles import TileBuffers, TileMask, walk


def _family(y: Blocks) -> PrefixRows:
    """The prefix rows behind a view (both sides of a Matryoshka tile pass are views)."""
    if not isinstance(y, PrefixView):
        raise TypeError("a Matryoshka tile pass needs prefix views on both sides")
    return y.family


class Joint:
    """What the prefix views of one objective share: the tile passes of every prefix.

    Pass 1 (:meth:`lse`): the first prefix to make a call runs it for every prefix, the others
    read their share (the objectives make the same calls in the same order for every prefix).
    Pass 2 (:meth:`grad`): each call is recorded and answered with zeros; :meth:`replay` then
    runs every recorded call once for all prefixes."""

    def __init__(self, prefixes: Prefixes):
        self.K = len(prefixes)
        self.cache: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.calls = [0] * self.K
        self.records: list[list[dict[str, Any]]] = [[] for _ in range(self.K)]

    def lse(
        self,
        xv: PrefixView,
        yv: Blocks,
        inv_temp: float,
        c: float,
        mask: TileMask,
        bs: int,
        fixed: bool,
        cols: bool,
        upper: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefix ``xv.k``'s share of :func:`joint_lse` (``yv``: a view of the same prefix)."""
        k = xv.k
        t = self.calls[k]
        self.calls[k] += 1
        if t == len(self.cache):
            yf = _family(yv)
            self.cache.append(joint_lse(xv.family, yf, inv_temp, c, mask, bs, fixed, cols, upper))
        row, col = self.cache[t]
        return row[k], (None if col is None else col[k])

    def grad(
        self, xv: PrefixView, yv: Blocks, need_y: bool, upper: bool, **rec: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Record prefix ``xv.k``'s pass 2 (the arguments of :func:`joint_grad`); zeros for now."""
        _family(yv)
        self.records[xv.k].append(dict(xv=xv, yv=yv, need_y=need_y, upper=upper, **rec))
        gx = xv.new_zeros(xv.shape)  # the tile part comes in replay()
        return gx, (xv.new_zeros(yv.shape) if need_y and not upper else None)

    def replay(self, outs: list[torch.Tensor | None]) -> torch.Tensor | float:
        """Every recorded call, all prefixes at once, added into ``outs`` (per input, (N, D));
        returns the tiles' d/d(inv_temp)."""
        if len({len(r) for r in self.records}) != 1:  # every prefix's objective made the same calls
            raise RuntimeError(
                f"prefixes recorded {[len(r) for r in self.records]} tile passes; expected equal"
            )
        d_inv: torch.Tensor | float = 0.0
        for calls in zip(*self.records):
            r0 = calls[0]
            two = r0["lse_c"] is not None and r0["v"] is not None
            xf, yf = r0["xv"].family, r0["yv"].family
            gx, gy, di = joint_grad(
                xf,
                yf,
                r0["inv_temp"],
                r0["c"],
                r0["mask"],
                r0["bs"],
                r0["fixed"],
                _stack(calls, "lse_r"),
                _stack(calls, "u"),
                _stack(calls, "lse_c") if two else None,
                _stack(calls, "v") if two else None,
                bool(r0["need_y"]),
                r0["upper"],
            )
            for f, g in ((xf, gx), (yf, None if r0["upper"] else gy)):
                if g is not None:
                    prev = outs[f.index]
                    outs[f.index] = g if prev is None else prev.add_(g)
            d_inv = d_inv + di
        for r in self.records:
            r.clear()
        return d_inv


def _stack(calls: Sequence[dict[str, Any]], key: str) -> torch.Tensor:
    """One recorded argument of every prefix, ``(K, n)``."""
    return torch.stack([r[key] for r in calls])


class MatryoshkaObjective(Objective):
    """sum_k mu_k L(Z^(k)) of any softmax objective ``build`` (InfoNCE, SupCon, CLIP, retrieval):
    one instance per prefix on :class:`PrefixView` inputs, their tile passes shared (:class:`Joint`)."""

    def __init__(
        self,
        build: Build,
        zs: Sequence[Rows | None],
        inv_temp: float,
        bias: float | None,
        needs: Sequence[bool],
        prefixes: Prefixes,
    ):
        self.prefixes, self.needs = prefixes, needs
        self.fams = [None if z is None else PrefixRows(z, prefixes, i) for i, z in enumerate(zs)]
        self.joint = Joint(prefixes)
        self.objs = [
            build([None if f is None else f.view(k, self.joint) for f in self.fams], inv_temp, bias, needs)  # type: ignore[misc]
            for k in range(len(prefixes))
        ]
        self.n = self.objs[0].n

    def losses(self) -> torch.Tensor:
        return sum(mu * o.losses() for mu, o in zip(self.prefixes.weights, self.objs))  # type: ignore[return-value]

    def mean_weights(self, like: torch.Tensor) -> torch.Tensor:
        return self.objs[0].mean_weights(like)

    def grad(self, w: torch.Tensor) -> Grads:
        outs: list[torch.Tensor | None] = [None] * len(self.fams)
        d_inv: torch.Tensor | float = 0.0
        for k, (mu, obj) in enumerate(zip(self.prefixes.weights, self.objs)):
            gs, di, _ = obj.grad(mu * w)  # the O(N d) parts; the tile parts are recorded
            d_inv = d_inv + di
            for i, g in enumerate(gs):
                if g is None:
                    continue
                f = self.fams[i]
                assert f is not None  # a gradient for an input that was given
                out = outs[i]
                if out is None:
                    out = outs[i] = f.x.new_zeros(f.x.shape)  # (N, D)
                f.chain_(out, k, g)
        d_inv = d_inv + self.joint.replay(outs)
        outs = [g if need else None for g, need in zip(outs, self.needs)]
        return outs, torch.as_tensor(d_inv), None


def matryoshka_objective(build: Build, prefixes: Prefixes | None) -> Build:
    """``build`` as is without prefixes, else its Matryoshka form."""
    if prefixes is None:
        return build

    def mrl_build(zs, inv_temp, bias, needs):
        return MatryoshkaObjective(build, zs, inv_temp, bias, needs, prefixes)

    return mrl_build


class MatryoshkaSigLIP(OnePassObjective):
    """SigLIP's sigmoid loss summed over prefixes, one pass: per tile and prefix
    X = -y (s^(k) + bias), loss_i += mu_k sum_j softplus(X_ij), dS = -y mu_k w_i sigmoid(X)."""

    def __init__(
        self,
        zs: Sequence[Rows | None],
        inv_temp: float,
        bias: float,
        needs: Sequence[bool],
        bs: int,
        prefixes: Prefixes,
    ):
        self.fa, self.fb = PrefixRows(present(zs[0]), prefixes, 0), PrefixRows(present(zs[1]), prefixes, 1)
        self.n = self.fa.x.shape[0]
        self.inv_temp, self.bias, self.bs, self.needs, self.mu = inv_temp, bias, bs, needs, prefixes.weights

    def _pass(self, w: torch.Tensor | None) -> tuple[torch.Tensor, Grads | None]:
        a, b = self.fa.x, self.fb.x
        buf = TileBuffers(a.dtype, a.device)
        pt = PrefixTile(self.fa, self.fb, buf, bool(self.needs[1]))
        shift = a.new_full((1, 1), self.bias)
        losses = a.new_zeros(self.n)
        ga = a.new_zeros(a.shape) if w is not None else None  # (B, D)
        gb = b.new_zeros(b.shape) if w is not None and self.needs[1] else None
        d_bias = a.new_zeros(())
        ones = a.new_ones(self.bs)
        for i0, i1, j0, j1, ai, a_i, b_j in walk(a, b, self.inv_temp, self.bs, buf):
            for k, X in pt.logits(i0, i1, j0, j1, ai, b_j, shift):  # s^(k) + bias
                X.diagonal(i0 - j0).neg_()  # X = -y S
                losses[i0:i1] -= self.mu[k] * F.logsigmoid(X.neg()).sum(1)  # softplus(X)
                if w is None:
                    continue
                X.sigmoid_()
                X.diagonal(i0 - j0).neg_()  # -y sigmoid(X)
                wk = self.mu[k] * w[i0:i1]
                d_bias += torch.mv(X, ones[: j1 - j0]).dot(wk)  # sum dS, dS = -y mu w sigmoid(X)
                pt.take(k, X, row=wk)
            if ga is not None:
                pt.flush(ga, gb, a_i, b_j)
        if ga is None:
            return losses, None
        d_inv = pt.finish(ga, gb, self.inv_temp)
        return losses, ([ga, gb], d_inv, d_bias)


def matryoshka_siglip_objective(bs: int, prefixes: Prefixes) -> Build:
    """The engine's ``build`` for the Matryoshka sigmoid loss of inputs (a, b)."""

    def build(zs, inv_temp, bias, needs):
        return MatryoshkaSigLIP(zs, inv_temp, bias, needs, bs, prefixes)

    return build
