"""Verify every objective's gradient and print a table (the ``contrastive gradcheck`` command,
whose parser is in :mod:`contrastive.cli`).

Two checks per objective: the NumPy reference's analytic gradient against central finite
differences (float64), and the torch op (value and gradient) against the reference in
float64, float32, bfloat16 and float16. Errors are reported as max absolute error and
max relative error (max |a - b| / max |b|, over the value and every gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import functional
from .reference import contrastive_loss as ref_cl
from .reference import cosine_similarity as ref_cs
from .reference import info_nce as ref_nce
from .reference import retrieval_loss as ref_ret
from .reference import siglip_loss as ref_sig
from .reference import supcon_loss as ref_sup

# One tolerance table for the whole project (relative error).
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 3e-2, "float16": 2e-2, "fd": 1e-6}
DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class Row:
    objective: str
    check: str
    dtype: str
    abs_err: float
    rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel_err)) and self.rel_err <= self.tol


def central_differences(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, same shape as x (float64)."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        fp = f(x)
        flat[k] = old - h
        fm = f(x)
        flat[k] = old
        gf[k] = (fp - fm) / (2 * h)
    return g


def _errors(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    abs_err, rel_err = 0.0, 0.0
    for got, want in pairs:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
        scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
        abs_err, rel_err = max(abs_err, diff), max(rel_err, diff / scale)
    return abs_err, rel_err


class Case:
    """One objective: random data, reference forward/grad, and the torch op."""

    name: str

    def data(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def ref_value(self, data) -> float:  # sum of the per-item values, weighted
        raise NotImplementedError

    def ref_grads(self, data) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def torch_value(self, tensors) -> torch.Tensor:
        raise NotImplementedError


class ContrastiveCase(Case):
    name = "contrastive_loss"

    def data(self, rng):
        B, d = 16, 5
        u, v = rng.normal(size=(B, d)), rng.normal(size=(B, d)) * 0.4
        return {"u": u, "v": v, "y": rng.uniform(size=B), "w": rng.normal(size=B)}

    def ref_value(self, x):
        return float(x["w"] @ ref_cl.forward(x["u"], x["v"], x["y"], margin=2.0))

    def ref_grads(self, x):
        du, dv, _ = ref_cl.grad(x["u"] * 1, x["v"], x["y"], margin=2.0)
        # the reference gives per-pair gradients (rows); weight them by w
        return {"u": du * x["w"][:, None], "v": dv * x["w"][:, None]}

    def torch_value(self, t):
        return (
            functional.contrastive_loss(t["u"], t["v"], t["y"], margin=2.0, reduction="none").double()
            * t["w"]
        ).sum()


class InfoNCECase(Case):
    def __init__(self, exclude_self: bool, decoupled: bool = False):
        self.exclude_self, self.decoupled = exclude_self, decoupled
        self.name = f"info_nce (exclude_self={exclude_self}{', decoupled' if decoupled else ''})"

    def data(self, rng):
        N, d = 12, 4
        return {"z": rng.normal(size=(N, d)), "w": rng.uniform(0.5, 1.5, size=N)}

    def ref_value(self, x):
        return float(x["w"] @ ref_nce.forward(x["z"], 0.5, self.exclude_self, decoupled=self.decoupled))

    def ref_grads(self, x):
        gz, _ = ref_nce.grad(x["z"], 0.5, self.exclude_self, weights=x["w"], decoupled=self.decoupled)
        return {"z": gz}

    def torch_value(self, t):
        B = t["z"].shape[0] // 2
        per_row = functional.info_nce(
            t["z"][:B],
            t["z"][B:],
            0.5,
            exclude_self=self.exclude_self,
            reduction="none",
            decoupled=self.decoupled,
            block_size=5,
        )
        return (per_row.double() * t["w"]).sum()


class SupConCase(Case):
    name = "supcon_loss"
    labels = np.array([0, 1, 2, 0, 1, 3, 0, 2, 4, 1, 2, 0])  # label 3 and 4: rows without a positive

    def data(self, rng):
        return {"z": rng.normal(size=(12, 4)), "w": rng.uniform(0.5, 1.5, size=12)}

    def ref_value(self, x):
        return float(x["w"] @ ref_sup.forward(x["z"], self.labels, 0.3))

    def ref_grads(self, x):
        return {"z": ref_sup.grad(x["z"], self.labels, 0.3, weights=x["w"])[0]}

    def torch_value(self, t):
        per_row = functional.supcon_loss(
            t["z"], torch.as_tensor(self.labels), 0.3, reduction="none", block_size=5
        )
        return (per_row.double() * t["w"]).sum()


class RetrievalCase(Case):
    name = "retrieval_loss (hard negatives, ids, symmetric)"
    ids = np.array([0, 1, 2, 0, 3, 4, 1, 5])

    def data(self, rng):
        B, K, d = 8, 2, 4
        return {
            "a": rng.normal(size=(B, d)),
            "p": rng.normal(size=(B, d)),
            "n": rng.normal(size=(B, K, d)),
            "w": rng.uniform(0.5, 1.5, size=B),
        }

    def ref_value(self, x):
        return float(x["w"] @ ref_ret.forward(x["a"], x["p"], x["n"], 0.2, True, self.ids))

    def ref_grads(self, x):
        ga, gp, gn, _ = ref_ret.grad(x["a"], x["p"], x["n"], 0.2, True, self.ids, weights=x["w"])
        return {"a": ga, "p": gp, "n": gn}

    def torch_value(self, t):
        per_row = functional.retrieval_loss(
            t["a"],
            t["p"],
            t["n"],
            0.2,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
            positive_ids=torch.as_tensor(self.ids),
            reduction="none",
            block_size=3,
        )
        return (per_row.double() * t["w"]).sum()


class SigLIPCase(Case):
    name = "siglip_loss"

    def data(self, rng):
        B, d = 9, 4
        return {
            "a": rng.normal(size=(B, d)),
            "b": rng.normal(size=(B, d)),
            "w": rng.uniform(0.5, 1.5, size=B),
        }

    def ref_value(self, x):
        return float(x["w"] @ ref_sig.forward(x["a"], x["b"], 0.5, -2.0))

    def ref_grads(self, x):
        ga, gb, _, _ = ref_sig.grad(x["a"], x["b"], 0.5, -2.0, weights=x["w"])
        return {"a": ga, "b": gb}

    def torch_value(self, t):
        per_row = functional.siglip_loss(t["a"], t["b"], 0.5, -2.0, reduction="none", block_size=4)
        return (per_row.double() * t["w"]).sum()


class ClipCase(Case):
    name = "clip_loss (two towers)"

    def data(self, rng):
        N, d = 9, 4
        return {
            "a": rng.normal(size=(N, d)),
            "b": rng.normal(size=(N, d)),
            "w": rng.uniform(0.5, 1.5, size=N),
        }

    def ref_value(self, x):
        return float(x["w"] @ ref_nce.clip_forward(x["a"], x["b"], 0.3))

    def ref_grads(self, x):
        ga, gb = ref_nce.clip_grad(x["a"], x["b"], 0.3, weights=x["w"])
        return {"a": ga, "b": gb}

    def torch_value(self, t):
        return (
            functional.clip_loss(t["a"], t["b"], 0.3, reduction="none", block_size=4).double() * t["w"]
        ).sum()


class CosineMapCase(Case):
    name = "cosine_similarity (map M)"

    def data(self, rng):
        B, d, k = 10, 4, 3
        return {"x": rng.normal(size=(B, d)), "y": rng.normal(size=(B, d)), "M": rng.normal(size=(k, d))}

    def ref_value(self, x):
        return float(ref_cs.sim_map(x["x"], x["y"], x["M"]).sum())

    def ref_grads(self, x):
        return {"M": ref_cs.grad_map(x["x"], x["y"], x["M"])}

    def torch_value(self, t):
        return functional.cosine_similarity(t["x"], t["y"], M=t["M"]).double().sum()


class CosineSymCase(Case):
    name = "cosine_similarity (symmetric A, tied)"

    def data(self, rng):
        B, d = 10, 4
        R = rng.normal(size=(d, d))
        A = R @ R.T + d * np.eye(d)
        iu = np.triu_indices(d)
        return {"x": rng.normal(size=(B, d)), "y": rng.normal(size=(B, d)), "a": A[iu]}

    @staticmethod
    def _full(a, d):
        A = np.zeros((d, d))
        A[np.triu_indices(d)] = a
        return A + A.T - np.diag(np.diag(A))

    def ref_value(self, x):
        return float(ref_cs.sim_sym(x["x"], x["y"], self._full(x["a"], x["x"].shape[1])).sum())

    def ref_grads(self, x):
        d = x["x"].shape[1]
        return {"a": ref_cs.grad_sym_tied(x["x"], x["y"], self._full(x["a"], d))[np.triu_indices(d)]}

    def torch_value(self, t):
        return functional.cosine_similarity(t["x"], t["y"], A=t["a"]).double().sum()


CASES = [
    ContrastiveCase(),
    InfoNCECase(True),
    InfoNCECase(False),
    InfoNCECase(True, decoupled=True),
    ClipCase(),
    SupConCase(),
    RetrievalCase(),
    SigLIPCase(),
    CosineMapCase(),
    CosineSymCase(),
]


def check_reference(case: Case, seed: int = 0) -> Row:
    """Reference analytic gradients against central finite differences, float64."""
    x = case.data(np.random.default_rng(seed))
    grads = case.ref_grads(x)
    pairs = []
    for key, g in grads.items():

        def f(val, key=key):
            return case.ref_value({**x, key: val})

        pairs.append((g, central_differences(f, x[key].copy())))
    a, r = _errors(pairs)
    return Row(case.name, "reference vs finite diff", "float64", a, r, TOLERANCE["fd"])


def check_torch(case: Case, dtype_name: str, seed: int = 0) -> Row:
    """The torch op's value and gradients against the reference, on inputs rounded to dtype."""
    dtype = DTYPES[dtype_name]
    x = case.data(np.random.default_rng(seed))
    grads_wanted = case.ref_grads
    tensors, rounded = {}, {}
    for key, val in x.items():
        if key in ("w",):
            tensors[key] = torch.tensor(val, dtype=torch.float64)
            rounded[key] = val
            continue
        t = torch.tensor(val, dtype=torch.float64).to(dtype)
        rounded[key] = t.double().numpy()
        tensors[key] = t.requires_grad_(key in ("u", "v", "z", "M", "a", "b", "p", "n"))
    value = case.torch_value(tensors)
    value.backward()
    pairs = [(value.detach().numpy(), np.asarray(case.ref_value(rounded)))]
    for key, want in grads_wanted(rounded).items():
        pairs.append((tensors[key].grad.double().numpy(), want))
    a, r = _errors(pairs)
    return Row(case.name, "torch vs reference", dtype_name, a, r, TOLERANCE[dtype_name])


def run(dtypes=tuple(DTYPES), seed: int = 0) -> list[Row]:
    rows = []
    for case in CASES:
        rows.append(check_reference(case, seed))
        rows.extend(check_torch(case, dt, seed) for dt in dtypes)
    return rows


def format_rows(rows: list[Row]) -> str:
    """The rows as a plain-text table, one line per check."""
    head = ("objective", "check", "dtype", "max abs err", "max rel err", "tolerance", "pass")
    body = [
        (
            r.objective,
            r.check,
            r.dtype,
            f"{r.abs_err:.2e}",
            f"{r.rel_err:.2e}",
            f"{r.tol:.0e}",
            "PASS" if r.ok else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]

    def line(cells: list) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
