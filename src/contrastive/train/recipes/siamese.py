"""Siamese network with the margin contrastive loss: DrLIM (Hadsell, Chopra, LeCun 2006).

An encoder (MLP or the small CNN of :mod:`..models`) followed by a linear map to a
low-dimensional embedding (2-D by default, as DrLIM) is trained with
:func:`contrastive.contrastive_loss` on pairs ``(i, j, y)``, ``y = 1`` similar (DrLIM's paper
uses the opposite convention). The pairs come, as in DrLIM, from each training sample's
``k`` nearest neighbours in input space (no labels; optional soft labels), or from class
labels (``pairs.source=labels``). They are drawn once per run from ``run.seed``.

Evaluation is verification on held-out pairs: the test split is cut in two halves (stratified),
label pairs are drawn in each, the score is ``-distance``; ROC-AUC and the equal error rate on
one half, accuracy there at the threshold calibrated on the other half. The final table
compares raw-pixel distance, the randomly initialised network and the trained embedding; the
2-D map of the test split is drawn coloured by class (DrLIM's figure with
``--data.classes=4,9``).

Run directory, checkpoints (``--resume``), AMP, DDP under torchrun, metrics files, progress
bar and the non-finite loss and weights checks are the shared loop's
(:mod:`contrastive.train.loop`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ... import contrastive_loss
from ...verification import verification_report
from .. import loop
from ..config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, choice, require
from ..data import Dataset, Split, channel_stats, load_dataset, stratified_split, to_float
from ..dist import DistConfig
from ..evaluate import embed
from ..models import build_encoder
from ..pairs import label_pairs, neighbour_pairs
from ..registry import check_encoder_name
from ..runlog import format_table
from .base import Recipe

__all__ = ["SiameseConfig", "SiameseModel", "SiameseTask", "evaluate_run", "load_encoder", "train"]


@dataclasses.dataclass
class SiameseDataConfig(DataConfig):
    """The shared data settings plus a class subset (DrLIM's 4s and 9s: ``classes = "4,9"``)."""

    classes: str = ""  # comma-separated labels to keep, "" keeps all

    def __post_init__(self):
        super().__post_init__()
        try:
            self.class_list()
        except ValueError as err:
            raise ConfigError(
                f"data.classes must be comma-separated integer labels like '4,9', got {self.classes!r}"
            ) from err

    def class_list(self):
        return sorted({int(c) for c in self.classes.split(",") if c.strip()})


@dataclasses.dataclass
class SiameseModelConfig:
    """Encoder and the linear map to the embedding."""

    encoder: str = "mlp"  # auto | mlp | cnn | python:package.module:factory (see contrastive.train.models)
    width: int = 16  # cnn: first conv width
    mlp_hidden: int = 256
    mlp_depth: int = 2
    embed_dim: int = 2  # DrLIM maps to 2-D; a python: factory is called with it and gives the whole map

    def __post_init__(self):
        try:
            check_encoder_name(self.encoder)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in ("width", "mlp_hidden", "mlp_depth", "embed_dim"):
            require(getattr(self, key) >= 1, f"model.{key}", f"must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass
class SiamesePairsConfig:
    """Where the training pairs come from."""

    source: str = "neighbours"  # neighbours (DrLIM, no labels) | labels
    k: int = 5  # neighbours: similar pairs per sample
    neg_per_sample: int = 5  # neighbours: random non-neighbours per sample
    soft: bool = False  # neighbours: soft labels exp(-d^2 / 2 sigma^2) for the similar pairs
    pairs_per_sample: int = 10  # labels: pairs per sample, half similar

    def __post_init__(self):
        choice(self.source, "pairs.source", ("neighbours", "labels"))
        for key in ("k", "neg_per_sample", "pairs_per_sample"):
            require(getattr(self, key) >= 1, f"pairs.{key}", f"must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass
class SiameseLossConfig:
    """Margin contrastive loss settings."""

    margin: float = 1.0  # dissimilar pairs farther apart than this cost nothing

    def __post_init__(self):
        require(self.margin > 0, "loss.margin", f"must be > 0, got {self.margin}")


@dataclasses.dataclass
class SiameseEvalConfig:
    """Held-out verification and the map."""

    every: int = 5  # evaluate every this many epochs (0: only at the end)
    pairs_per_sample: int = 10  # verification pairs per test sample, half similar
    baselines: bool = True  # raw-pixel distance and the randomly initialised network
    map: bool = True  # PNG of the test embeddings (2-D as is, else PCA) coloured by class
    batch_size: int = 1024

    def __post_init__(self):
        require(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        require(
            self.pairs_per_sample >= 1, "eval.pairs_per_sample", f"must be >= 1, got {self.pairs_per_sample}"
        )
        require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass
class SiameseConfig:
    """Every setting of a siamese run, one section per concern."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: SiameseDataConfig = dataclasses.field(default_factory=SiameseDataConfig)
    model: SiameseModelConfig = dataclasses.field(default_factory=SiameseModelConfig)
    pairs: SiamesePairsConfig = dataclasses.field(default_factory=SiamesePairsConfig)
    loss: SiameseLossConfig = dataclasses.field(default_factory=SiameseLossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(warmup_epochs=1))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30, batch_size=128))
    eval: SiameseEvalConfig = dataclasses.field(default_factory=SiameseEvalConfig)
    dist: DistConfig = dataclasses.field(default_factory=DistConfig)  # multi-process runs (torchrun)


class SiameseModel(nn.Module):
    """``x -> G_W(x)``: the encoder then a linear map to ``embed_dim``; ``(N, ...) -> (N, embed_dim)``.
    A user's encoder (``model.encoder = python:...``) is the whole map: no linear map follows it."""

    def __init__(self, encoder: nn.Module, embed_dim: int, head: bool = True):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, embed_dim) if head else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _keep(split: Split, classes) -> Split:
    if not classes:
        return split
    m = torch.isin(split.y, torch.tensor(classes, dtype=split.y.dtype))
    return Split(split.x[m], split.y[m])


def _train_pairs(cfg: SiameseConfig, ds: Dataset):
    p = cfg.pairs
    if p.source == "labels":
        if not bool((ds.train.y >= 0).all()):
            raise ConfigError("pairs.source=labels needs labelled training data; use pairs.source=neighbours")
        i, j, y = label_pairs(ds.train.y.numpy(), p.pairs_per_sample, cfg.run.seed)
    else:
        i, j, y = neighbour_pairs(
            to_float(ds.train.x).flatten(1).numpy(), p.k, p.neg_per_sample, p.soft, cfg.run.seed
        )
    return torch.as_tensor(i), torch.as_tensor(j), torch.as_tensor(y, dtype=torch.float32)


def _eval_pairs(cfg: SiameseConfig, ds: Dataset):
    """Two disjoint halves of the test split (stratified), label pairs in each: calibration, test."""
    y = ds.test.y.numpy()
    a, b = stratified_split(y, 0.5, cfg.run.seed + 1)
    out = []
    for half, seed in ((a, cfg.run.seed + 2), (b, cfg.run.seed + 3)):
        i, j, s = label_pairs(y[half], cfg.eval.pairs_per_sample, seed)
        out.append((half[i], half[j], s))
    return out


def _verify(features: torch.Tensor, eval_pairs) -> dict[str, float]:
    """Verification report with score = -||f_i - f_j||."""
    (ci, cj, cy), (ti, tj, ty) = eval_pairs
    f = features.double()
    score = lambda i, j: -(f[i] - f[j]).norm(dim=1).numpy()  # noqa: E731
    return verification_report(score(ci, cj), cy, score(ti, tj), ty)


class SiameseTask(loop.Task):
    """DrLIM on the shared loop: pairs ``(i, j, y)``, one shared network, margin contrastive loss."""

    name = "siamese"
    trained_name = "trained embedding"
    throughput_key = "pairs_per_s"

    def run_name(self) -> str:
        cfg = self.cfg
        subset = "-" + "".join(str(c) for c in cfg.data.class_list()) if cfg.data.classes else ""
        return f"siamese-{cfg.data.name}{subset}"

    def prepare(self) -> int:
        cfg = self.cfg
        ds = load_dataset(cfg.data)
        missing = set(cfg.data.class_list()) - set(ds.train.y.tolist())
        if missing:
            raise ConfigError(
                f"data.classes: label(s) {sorted(missing)} not in the data; its labels are "
                f"{sorted(set(ds.train.y.tolist()))}"
            )
        ds.train, ds.test = _keep(ds.train, cfg.data.class_list()), _keep(ds.test, cfg.data.class_list())
        if len(ds.train) < cfg.pairs.k + 2 or len(ds.test) < 4:
            raise ConfigError(
                f"too few samples after data.classes={cfg.data.classes!r}: train {len(ds.train)}, test "
                f"{len(ds.test)}; check the class labels or lower pairs.k"
            )
        if not (bool((ds.test.y >= 0).all()) and len(ds.test.y.unique()) >= 2):
            raise ConfigError("verification needs a labelled test split with at least two classes")
        self.ds = ds
        self.pairs = _train_pairs(cfg, ds)  # (i, j, y), drawn once from run.seed
        self.eval_pairs = _eval_pairs(cfg, ds)
        return len(self.pairs[0])

    def build(self, device: torch.device) -> nn.Module:
        cfg, ds = self.cfg, self.ds
        self.device = device
        mean, std = channel_stats(ds.train.x)
        encoder = build_encoder(cfg.model, ds.sample_shape, mean, std, self.encoder)
        own = self.encoder is not None or cfg.model.encoder.startswith(("python:", "object:"))
        self.model = SiameseModel(encoder, cfg.model.embed_dim, head=not own).to(device)
        return self.model

    def run_info(self) -> dict[str, Any]:
        return {"sample_shape": list(self.ds.sample_shape)}

    def batch(self, idx: torch.Tensor, device: torch.device) -> loop.Batch:
        pi, pj, py = self.pairs
        x = self.ds.train.x
        return loop.Batch(
            (to_float(x[pi[idx]].to(device)), to_float(x[pj[idx]].to(device))), py[idx].to(device), len(idx)
        )

    def loss(self, embeddings: tuple[torch.Tensor, ...], batch: loop.Batch) -> torch.Tensor:
        u, v = embeddings  # (B, embed_dim) each, one forward: shared weights
        return contrastive_loss(u, v, batch.targets, margin=self.cfg.loss.margin, check_finite=False)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        device = self.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            f_test = embed(model, self.ds.test.x, self.cfg.eval.batch_size, device)  # (N_test, embed_dim)
        return _verify(f_test, self.eval_pairs), f_test

    def baselines(self, model: nn.Module) -> dict[str, dict[str, float]]:
        if not self.cfg.eval.baselines:
            return {}
        raw = _verify(to_float(self.ds.test.x).flatten(1), self.eval_pairs)
        init, _ = self.evaluate(model)
        return {"raw pixels": raw, "random network": init}

    def initial_record(self, baselines) -> dict[str, Any]:
        return {f"init_{k}": v for k, v in baselines.get("random network", {}).items()}

    def score(self, metrics, f_test) -> float:
        # best by ROC-AUC on the calibration pairs only, so the test pairs never pick a model
        return _calibration_auc(f_test, self.eval_pairs) if "roc_auc" in metrics else -1.0

    def header(self, what: str, run_dir: Path, device: torch.device) -> str:
        cfg, ds, (pi, _, py) = self.cfg, self.ds, self.pairs
        return (
            f"siamese: {what} {run_dir} on {device}; data {ds.name} {tuple(ds.sample_shape)} classes "
            f"{cfg.data.classes or 'all'}, train {len(ds.train)}, test {len(ds.test)}; {len(pi)} {cfg.pairs.source} "
            f"pairs ({int((py == 1).sum())} similar), encoder {cfg.model.encoder} -> {cfg.model.embed_dim}-D, "
            f"margin {cfg.loss.margin}, {cfg.train.epochs} epochs"
        )

    def plots(self, run_dir: Path, records, baselines, final, f_test) -> dict[str, Path]:
        from .. import plots

        cfg = self.cfg
        paths = {
            "loss_plot": plots.plot_loss(records, run_dir / "loss.png", "margin contrastive loss (train)")
        }
        if cfg.eval.map and len(f_test) >= 2:
            which = cfg.data.classes.replace(",", "") if cfg.data.classes else "all"
            paths["map_plot"] = plot_map(
                f_test,
                self.ds.test.y,
                run_dir / f"map_{which}.png",
                self.ds.classes,
                f"siamese ({cfg.pairs.source} pairs), test split, classes {cfg.data.classes or 'all'}",
            )
        return paths

    def table(self, rows: list[tuple[str, dict[str, Any]]]) -> str:
        return (
            "\nverification on held-out test pairs, score = -distance\n" + format_table(rows, COLUMNS) + "\n"
        )


def _calibration_auc(features, eval_pairs) -> float:
    from ...verification import roc_auc

    ci, cj, cy = eval_pairs[0]
    return roc_auc(-(features[ci].double() - features[cj].double()).norm(dim=1).numpy(), cy)


def plot_map(features: torch.Tensor, labels: torch.Tensor, path, classes=(), title: str = "") -> Path:
    """Scatter of the test embeddings coloured by class: the coordinates themselves when 2-D
    (DrLIM's figure), the first two principal components otherwise."""
    from ..plots import project_2d, pyplot

    plt = pyplot()
    xy = features.double().numpy() if features.shape[1] == 2 else project_2d(features, "pca")
    labels = labels.numpy()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    cmap = plt.get_cmap("tab10" if labels.max(initial=0) < 10 else "tab20")
    for c in np.unique(labels):
        m = labels == c
        name = classes[c] if 0 <= c < len(classes) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=8, color=cmap(int(c) % cmap.N), label=name)
    if len(np.unique(labels)) <= 20:
        ax.legend(markerscale=2.5, fontsize=8, loc="best", ncol=2)
    ax.set(
        title=title,
        xlabel="G_W(x)[0]" if features.shape[1] == 2 else "PC 1",
        ylabel="G_W(x)[1]" if features.shape[1] == 2 else "PC 2",
    )
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


COLUMNS = [("roc_auc", "ROC-AUC %"), ("eer", "EER %"), ("accuracy", "accuracy % (calibrated threshold)")]


RECIPE = Recipe.of(
    SiameseTask, SiameseConfig, "Siamese / DrLIM: pairs from neighbours or labels, margin contrastive loss"
)
train, evaluate_run, load_encoder = RECIPE.train, RECIPE.evaluate, RECIPE.load_encoder
