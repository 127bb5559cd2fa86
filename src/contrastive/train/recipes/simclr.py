"""SimCLR (Chen et al. 2020): its training procedure end to end.

For every batch: two augmented views of each sample, the encoder f and projection head g,
``z = g(f(x))``, the InfoNCE loss on cosine similarities with the self-similarity excluded
from the denominator (:func:`contrastive.info_nce`), backpropagation, an optimiser step.
Held-out evaluation: weighted kNN, linear probe, alignment and uniformity, every
``eval.every`` epochs and at the end; ``best.pt`` keeps the best kNN accuracy; the final table
compares raw pixels, the randomly initialised encoder and the trained encoder on one test
split. Everything else (run folder, checkpoints and ``--resume``, AMP, DDP, progress, metrics
files) is the shared loop's, :mod:`contrastive.train.loop`.

Run it with ``contrastive train simclr``; the defaults train a small CNN on scikit-learn's
digits in about a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import distributed as cd
from ... import info_nce, supcon_loss
from .. import augment as A
from .. import loop
from ..config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    choice,
    require,
)
from ..data import Dataset, channel_stats, load_dataset, to_float
from ..dist import DistConfig, limit_threads
from ..evaluate import alignment, embed, evaluate_features, uniformity
from ..models import SimCLRModel, build_model
from ..runlog import format_table
from .base import Recipe

__all__ = ["SimCLRConfig", "SimCLRLossConfig", "SimCLRTask", "evaluate_run", "load_encoder", "train"]


LOSSES = ("info_nce", "supcon")


@dataclasses.dataclass
class SimCLRLossConfig:
    """The objective: InfoNCE (NT-Xent) of the two views, or supervised contrastive (labels)."""

    name: str = (
        "info_nce"  # info_nce | supcon (every other view of the same class is a positive; needs labels)
    )
    temperature: float = 0.3  # tuned on digits: 0.3-0.4 beat 0.2 and 0.5 for kNN accuracy
    exclude_self: bool = True  # info_nce: SimCLR's denominator; false keeps k = i (van den Oord 2018)
    decoupled: bool = False  # info_nce: DCL, the positive left out of the denominator (Yeh et al. 2022)

    def __post_init__(self):
        choice(self.name, "loss.name", LOSSES)
        require(
            self.temperature > 0,
            "loss.temperature",
            f"must be > 0, got {self.temperature}; SimCLR uses 0.1-0.5",
        )
        require(
            not (self.decoupled and self.name != "info_nce"),
            "loss.decoupled",
            f"applies to loss.name=info_nce only, got loss.name={self.name}",
        )


@dataclasses.dataclass
class SimCLRConfig:
    """Every setting of a SimCLR run, one section per concern."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: SimCLRLossConfig = dataclasses.field(default_factory=SimCLRLossConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    dist: DistConfig = dataclasses.field(default_factory=DistConfig)  # multi-process runs (torchrun)


class _Projector(nn.Module):
    """``x -> z`` of a SimCLR model (for alignment and uniformity)."""

    def __init__(self, model: SimCLRModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[1]


def _labelled(ds: Dataset) -> bool:
    return len(ds.train) > 0 and bool((ds.train.y >= 0).all()) and bool((ds.test.y >= 0).all())


class SimCLRTask(loop.Task):
    """SimCLR on the shared loop: two views per sample, ``z = g(f(x))``, InfoNCE."""

    name = "simclr"
    nonfinite_hint = "a lower optim.lr, train.grad_clip > 0 or a higher loss.temperature"

    def prepare(self) -> int:
        self.ds = load_dataset(self.cfg.data)
        if len(self.ds.train) < 2:
            raise ConfigError(
                f"the training split has {len(self.ds.train)} sample(s); SimCLR needs at least 2"
            )
        c = self.cfg.loss
        if c.name == "supcon" and not (len(self.ds.train) and bool((self.ds.train.y >= 0).all())):
            raise ConfigError(
                "loss.name=supcon needs class labels for every training sample; these data have none "
                "(use loss.name=info_nce)"
            )
        if self.dist.active and c.decoupled:
            raise ConfigError(
                "loss.decoupled=true (DCL) has no global-batch (torch.distributed) form yet; run it in "
                "one process, or use loss.decoupled=false (info_nce or supcon) under torchrun"
            )
        return len(self.ds.train)

    def build(self, device: torch.device) -> nn.Module:
        mean, std = channel_stats(self.ds.train.x)
        self.device = device
        self.model = build_model(self.cfg.model, self.ds.sample_shape, mean, std, self.encoder).to(device)
        self.aug = A.build_augment(self.cfg.augment, self.ds.sample_shape).to(device)
        return self.model

    def run_info(self) -> dict[str, Any]:
        return {"sample_shape": list(self.ds.sample_shape)}

    def batch(self, idx: torch.Tensor, device: torch.device) -> loop.Batch:
        x = to_float(self.ds.train.x[idx].to(device, non_blocking=True))
        v1, v2 = A.two_views(self.aug, x)
        return loop.Batch((v1, v2), self.ds.train.y[idx], len(idx))

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)[1]  # z = g(f(x)), (N, proj_dim)

    def loss(self, embeddings: tuple[torch.Tensor, ...], batch: loop.Batch) -> torch.Tensor:
        z1, z2 = embeddings  # (B, proj_dim) each
        c = self.cfg.loss
        if c.name == "supcon":
            y = batch.targets.to(z1.device)  # (B,)
            # under torchrun the labels of every rank are gathered with the embeddings (global batch)
            sup = cd.supcon_loss if self.dist.active else supcon_loss
            return sup(torch.cat([z1, z2]), torch.cat([y, y]), c.temperature, check_finite=False)  # (2B, d)
        if c.decoupled:
            return info_nce(
                z1, z2, c.temperature, exclude_self=c.exclude_self, check_finite=False, decoupled=True
            )
        loss_fn = cd.info_nce if self.dist.active else info_nce  # global-batch negatives, exact DDP gradients
        return loss_fn(z1, z2, c.temperature, exclude_self=c.exclude_self, check_finite=False)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        """Held-out metrics of the encoder; leaves every random generator as it was."""
        cfg, ds, device, e = self.cfg, self.ds, self.device, self.cfg.eval
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            limit_threads(e.threads),
        ):
            f_test = embed(model.encoder, ds.test.x, e.batch_size, device)
            out: dict[str, float] = {}
            if _labelled(ds):
                f_train = embed(model.encoder, ds.train.x, e.batch_size, device)
                out.update(self._feature_metrics(f_train, f_test))
            x = to_float(ds.test.x[:2048]).to(device)
            v1, v2 = A.two_views(self.aug, x, seed=cfg.run.seed)
            proj = _Projector(model)
            z1, z2 = embed(proj, v1, e.batch_size, device), embed(proj, v2, e.batch_size, device)
            out["alignment"] = alignment(z1, z2)
            out["uniformity"] = uniformity(embed(proj, x, e.batch_size, device))
        return out, f_test

    def _feature_metrics(self, f_train: torch.Tensor, f_test: torch.Tensor) -> dict[str, float]:
        """kNN, retrieval and linear-probe metrics of features ``(N_train, d)`` and ``(N_test, d)``
        of the two splits, with the ``eval`` settings."""
        ds, e = self.ds, self.cfg.eval
        return evaluate_features(
            f_train,
            ds.train.y,
            f_test,
            ds.test.y,
            e.knn_k,
            e.knn_temperature,
            e.probe,
            e.probe_C,
            e.probe_max_iter,
        )

    def baselines(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """Raw pixels and the randomly initialised encoder, on the same split."""
        ds, e = self.ds, self.cfg.eval
        if not (e.baselines and _labelled(ds)):
            return {}
        with limit_threads(e.threads):
            raw = self._feature_metrics(to_float(ds.train.x).flatten(1), to_float(ds.test.x).flatten(1))
        init, _ = self.evaluate(model)
        return {"raw pixels": raw, "random encoder": init}

    def initial_record(self, baselines) -> dict[str, Any]:
        return dict(baselines.get("random encoder", {}))

    def score(self, metrics, extra) -> float:
        return metrics.get("knn_accuracy", -1.0)

    def header(self, what: str, run_dir: Path, device: torch.device) -> str:
        cfg, ds = self.cfg, self.ds
        return (
            f"simclr: {what} {run_dir} on {device}; data {ds.name} {tuple(ds.sample_shape)}, train {len(ds.train)}, "
            f"test {len(ds.test)}; encoder {_encoder_name(self.model)}, {cfg.train.epochs} epochs, batch "
            f"{cfg.train.batch_size}, {cfg.optim.name} lr {cfg.optim.lr}, temperature {cfg.loss.temperature}"
            + (
                ""
                if cfg.loss.name == "info_nce" and not cfg.loss.decoupled
                else f", loss {cfg.loss.name}{' (decoupled)' if cfg.loss.decoupled else ''}"
            )
        )

    def plots(self, run_dir: Path, records, baselines, final, f_test) -> dict[str, Path]:
        from .. import plots

        cfg, ds = self.cfg, self.ds
        with limit_threads(cfg.eval.threads):
            paths = {"loss_plot": plots.plot_loss(records, run_dir / "loss.png")}
            if "knn_accuracy" in final:
                paths["accuracy_plot"] = plots.plot_accuracy(records, run_dir / "accuracy.png", baselines)
            if cfg.eval.map != "none" and _labelled(ds) and len(f_test) >= 2:
                f_unit = torch.nn.functional.normalize(f_test, dim=1)  # the geometry kNN and the loss see
                paths["map_plot"] = plots.plot_embedding_map(
                    f_unit,
                    ds.test.y,
                    run_dir / f"map_{cfg.eval.map}.png",
                    cfg.eval.map,
                    ds.classes,
                    "trained encoder, test split",
                )
        return paths

    def summary_extra(self) -> dict[str, Any]:
        return {"knn_k": self.cfg.eval.knn_k, "knn_temperature": self.cfg.eval.knn_temperature}

    def table(self, rows: list[tuple[str, dict[str, Any]]]) -> str:
        e = self.cfg.eval
        cols = [
            ("knn_accuracy", f"kNN acc % (k={e.knn_k}, T={e.knn_temperature:g})"),
            ("linear_accuracy", "linear probe %"),
            ("precision_at_1", "P@1 %"),
            ("mean_average_precision_at_r", "MAP@R %"),
        ]
        text = "\n" + format_table(rows, cols)
        extra = [(name, m) for name, m in rows if "alignment" in m]
        if extra:
            text += "\n" + "\n".join(
                f"{name}: alignment {m['alignment']:.3f}, uniformity {m['uniformity']:.3f}"
                for name, m in extra
            )
        return text + "\n"

    def encoder_of(self, model: nn.Module) -> nn.Module:
        return model.encoder


def _encoder_name(model: SimCLRModel) -> str:
    backbone = getattr(model.encoder, "backbone", model.encoder)
    return type(backbone).__name__


RECIPE = Recipe.of(
    SimCLRTask, SimCLRConfig, "SimCLR: two augmented views, encoder + projection head, InfoNCE"
)
train, evaluate_run, load_encoder = RECIPE.train, RECIPE.evaluate, RECIPE.load_encoder
