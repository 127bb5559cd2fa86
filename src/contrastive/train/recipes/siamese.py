"""Siamese network with the margin contrastive loss: DrLIM (Hadsell, Chopra, LeCun 2006), seed 000.

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

Run directory, checkpoints (``--resume``), metrics files, progress bar and non-finite-loss
handling are those of the SimCLR recipe.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ... import contrastive_loss
from ...verification import verification_report
from .. import checkpoint as C
from ..config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, _choice, _require
from ..data import Dataset, Split, load_dataset, stratified_split, to_float
from ..evaluate import embed
from ..models import ENCODERS, build_encoder
from ..optim import WarmupCosine, build_optimizer
from ..pairs import label_pairs, neighbour_pairs
from ..runlog import MetricsLog, NonFiniteLossError, Progress, format_table, new_run_dir
from ..runtime import channel_stats, eval_config, read_run, restore, resolve_device, seed_everything, write_run
from . import Recipe

__all__ = ["SiameseConfig", "SiameseModel", "evaluate_run", "load_encoder", "train"]


@dataclasses.dataclass
class SiameseDataConfig(DataConfig):
    """The shared data settings plus a class subset (DrLIM's 4s and 9s: ``classes = "4,9"``)."""

    classes: str = ""  # comma-separated labels to keep, "" keeps all

    def __post_init__(self):
        super().__post_init__()
        try:
            self.class_list()
        except ValueError:
            raise ConfigError(f"data.classes must be comma-separated integer labels like '4,9', got {self.classes!r}")

    def class_list(self):
        return sorted({int(c) for c in self.classes.split(",") if c.strip()})


@dataclasses.dataclass
class SiameseModelConfig:
    """Encoder and the linear map to the embedding."""

    encoder: str = "mlp"  # auto | mlp | cnn (see contrastive.train.models)
    width: int = 16  # cnn: first conv width
    mlp_hidden: int = 256
    mlp_depth: int = 2
    embed_dim: int = 2  # DrLIM maps to 2-D

    def __post_init__(self):
        _choice(self.encoder, "model.encoder", ENCODERS)
        for key in ("width", "mlp_hidden", "mlp_depth", "embed_dim"):
            _require(getattr(self, key) >= 1, f"model.{key}", f"must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass
class PairsConfig:
    """Where the training pairs come from."""

    source: str = "neighbours"  # neighbours (DrLIM, no labels) | labels
    k: int = 5  # neighbours: similar pairs per sample
    neg_per_sample: int = 5  # neighbours: random non-neighbours per sample
    soft: bool = False  # neighbours: soft labels exp(-d^2 / 2 sigma^2) for the similar pairs
    pairs_per_sample: int = 10  # labels: pairs per sample, half similar

    def __post_init__(self):
        _choice(self.source, "pairs.source", ("neighbours", "labels"))
        for key in ("k", "neg_per_sample", "pairs_per_sample"):
            _require(getattr(self, key) >= 1, f"pairs.{key}", f"must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass
class MarginConfig:
    """Margin contrastive loss settings."""

    margin: float = 1.0  # dissimilar pairs farther apart than this cost nothing

    def __post_init__(self):
        _require(self.margin > 0, "loss.margin", f"must be > 0, got {self.margin}")


@dataclasses.dataclass
class VerifyConfig:
    """Held-out verification and the map."""

    every: int = 5  # evaluate every this many epochs (0: only at the end)
    pairs_per_sample: int = 10  # verification pairs per test sample, half similar
    baselines: bool = True  # raw-pixel distance and the randomly initialised network
    map: bool = True  # PNG of the test embeddings (2-D as is, else PCA) coloured by class
    batch_size: int = 1024

    def __post_init__(self):
        _require(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        _require(self.pairs_per_sample >= 1, "eval.pairs_per_sample", f"must be >= 1, got {self.pairs_per_sample}")
        _require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass
class SiameseConfig:
    """Every setting of a siamese run, one section per concern."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: SiameseDataConfig = dataclasses.field(default_factory=SiameseDataConfig)
    model: SiameseModelConfig = dataclasses.field(default_factory=SiameseModelConfig)
    pairs: PairsConfig = dataclasses.field(default_factory=PairsConfig)
    loss: MarginConfig = dataclasses.field(default_factory=MarginConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(warmup_epochs=1))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30, batch_size=128))
    eval: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)


class SiameseModel(nn.Module):
    """``x -> G_W(x)``: the encoder then a linear map to ``embed_dim``; ``(N, ...) -> (N, embed_dim)``."""

    def __init__(self, encoder: nn.Module, embed_dim: int):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.feature_dim, embed_dim)

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
        i, j, y = neighbour_pairs(to_float(ds.train.x).flatten(1).numpy(), p.k, p.neg_per_sample, p.soft, cfg.run.seed)
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


def _setup(cfg: SiameseConfig):
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    ds = load_dataset(cfg.data)
    missing = set(cfg.data.class_list()) - set(ds.train.y.tolist())
    if missing:
        raise ConfigError(f"data.classes: label(s) {sorted(missing)} not in the data; its labels are "
                          f"{sorted(set(ds.train.y.tolist()))}")
    ds.train, ds.test = _keep(ds.train, cfg.data.class_list()), _keep(ds.test, cfg.data.class_list())
    if len(ds.train) < cfg.pairs.k + 2 or len(ds.test) < 4:
        raise ConfigError(f"too few samples after data.classes={cfg.data.classes!r}: train {len(ds.train)}, test "
                          f"{len(ds.test)}; check the class labels or lower pairs.k")
    if not (bool((ds.test.y >= 0).all()) and len(ds.test.y.unique()) >= 2):
        raise ConfigError("verification needs a labelled test split with at least two classes")
    pairs = _train_pairs(cfg, ds)
    seed_everything(cfg.run.seed)
    mean, std = channel_stats(ds.train.x)
    model = SiameseModel(build_encoder(cfg.model, ds.sample_shape, mean, std), cfg.model.embed_dim).to(device)
    opt = build_optimizer(cfg.optim, model)
    bs = min(cfg.train.batch_size, len(pairs[0]))
    steps = len(pairs[0]) // bs if cfg.train.drop_last else -(-len(pairs[0]) // bs)
    sched = WarmupCosine(opt, cfg.optim.warmup_epochs * steps, cfg.train.epochs * steps, cfg.optim.min_lr_ratio,
                         cfg.optim.schedule)
    return device, ds, pairs, model, opt, sched, bs, steps


def _verify(features: torch.Tensor, eval_pairs) -> Dict[str, float]:
    """Verification report with score = -||f_i - f_j||."""
    (ci, cj, cy), (ti, tj, ty) = eval_pairs
    f = features.double()
    score = lambda i, j: -(f[i] - f[j]).norm(dim=1).numpy()  # noqa: E731
    return verification_report(score(ci, cj), cy, score(ti, tj), ty)


@torch.no_grad()
def _evaluate(model, ds, eval_pairs, cfg, device):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        f_test = embed(model, ds.test.x, cfg.eval.batch_size, device)  # (N_test, embed_dim)
    return _verify(f_test, eval_pairs), f_test


def _baselines(model, ds, eval_pairs, cfg, device) -> Dict[str, Dict[str, float]]:
    if not cfg.eval.baselines:
        return {}
    raw = _verify(to_float(ds.test.x).flatten(1), eval_pairs)
    init, _ = _evaluate(model, ds, eval_pairs, cfg, device)
    return {"raw pixels": raw, "random network": init}


def _state(model, opt, sched, epoch, step, best, baselines) -> Dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch, "step": step, "best": best, "baselines": baselines, "rng": C.capture_rng()}


def train(cfg: SiameseConfig, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train a siamese network as ``cfg`` says; with ``resume``, continue the run in that directory.

    Returns:
        The summary (also in ``summary.json``): run directory, baselines, final metrics, paths, wall time.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
        ConfigError, ValueError, FileNotFoundError: bad settings or data.
    """
    if not isinstance(cfg, SiameseConfig):
        raise TypeError(f"cfg must be a SiameseConfig, got {type(cfg).__name__}")
    t_start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        if read_run(run_dir)["recipe"] != "siamese":
            raise ValueError(f"{run_dir} is not a siamese run; resume it with its own recipe")
    else:
        subset = "-" + "".join(str(c) for c in cfg.data.class_list()) if cfg.data.classes else ""
        run_dir = new_run_dir(cfg.run.root, cfg.run.name or f"siamese-{cfg.data.name}{subset}", cfg.run.overwrite)
    device, ds, (pi, pj, py), model, opt, sched, bs, steps = _setup(cfg)
    eval_pairs = _eval_pairs(cfg, ds)
    write_run(run_dir, cfg, "siamese", sample_shape=list(ds.sample_shape))
    ckpt_dir = run_dir / "checkpoints"
    log = MetricsLog(run_dir, cfg.run.tensorboard)
    if resume is not None:
        state = C.load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, step, best, baselines = state["epoch"], state["step"], state["best"], state["baselines"]
        C.restore_rng(state["rng"])
        log.truncate(start)
    else:
        start, step, best = 0, 0, -1.0
        baselines = _baselines(model, ds, eval_pairs, cfg, device)
        log.log({"epoch": 0, **{f"init_{k}": v for k, v in baselines.get("random network", {}).items()}})
        C.save_checkpoint(ckpt_dir / "last.pt", _state(model, opt, sched, 0, 0, best, baselines))
    print(f"siamese: {'resuming' if start else 'training'} {run_dir} on {device}; data {ds.name} "
          f"{tuple(ds.sample_shape)} classes {cfg.data.classes or 'all'}, train {len(ds.train)}, test {len(ds.test)}; "
          f"{len(pi)} {cfg.pairs.source} pairs ({int((py == 1).sum())} similar), encoder {cfg.model.encoder} -> "
          f"{cfg.model.embed_dim}-D, margin {cfg.loss.margin}, {cfg.train.epochs} epochs", flush=True)
    progress = Progress(cfg.train.epochs * steps, start * steps, cfg.run.progress)
    final, f_test = None, None
    try:
        for epoch in range(start + 1, cfg.train.epochs + 1):
            model.train()
            order = torch.randperm(len(pi))
            total, seen, t0 = 0.0, 0, time.perf_counter()
            for s in range(steps):
                idx = order[s * bs:(s + 1) * bs]
                x = to_float(torch.cat([ds.train.x[pi[idx]], ds.train.x[pj[idx]]]).to(device))  # (2B, ...)
                u, v = model(x).float().chunk(2)  # (B, embed_dim) each, one forward: shared weights
                loss = contrastive_loss(u, v, py[idx].to(device), cfg.loss.margin, check_finite=False)
                value = float(loss.detach())
                if not np.isfinite(value):
                    log.log({"epoch": epoch, "event": f"non-finite loss ({value}) at step {s + 1}"})
                    raise NonFiniteLossError(
                        f"the loss became {value} at epoch {epoch}, step {s + 1}: training stopped. The last "
                        f"good checkpoint, {ckpt_dir / 'last.pt'} (epoch {epoch - 1}), was kept. Resume from it "
                        f"(--resume {run_dir}) with a lower optim.lr or train.grad_clip > 0.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                opt.step()
                lr = opt.param_groups[0]["lr"]
                sched.step()
                step += 1
                total += value * len(idx)
                seen += len(idx)
                progress.update(epoch, value, lr, seen / max(time.perf_counter() - t0, 1e-9))
            elapsed = time.perf_counter() - t0
            record = {"epoch": epoch, "loss": total / seen, "lr": lr, "pairs_per_s": seen / elapsed,
                      "epoch_time_s": elapsed}
            if epoch == cfg.train.epochs or (cfg.eval.every and epoch % cfg.eval.every == 0):
                final, f_test = _evaluate(model, ds, eval_pairs, cfg, device)
                record.update(final)
                progress.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
            log.log(record)
            # best by ROC-AUC on the calibration pairs only, so the test pairs never pick a model
            cal = _calibration_auc(f_test, eval_pairs) if "roc_auc" in record else -1.0
            C.save_checkpoint(ckpt_dir / "last.pt", _state(model, opt, sched, epoch, step, max(best, cal), baselines))
            if cal > best:
                best = cal
                C.save_checkpoint(ckpt_dir / "best.pt", _state(model, opt, sched, epoch, step, best, baselines))
    finally:
        progress.close()
        log.close()
    if final is None:  # resumed a run that had already finished
        final, f_test = _evaluate(model, ds, eval_pairs, cfg, device)
    return _finish(cfg, run_dir, model, ds, log, baselines, final, f_test, time.perf_counter() - t_start)


def _calibration_auc(features, eval_pairs) -> float:
    from ...verification import roc_auc

    ci, cj, cy = eval_pairs[0]
    return roc_auc(-(features[ci].double() - features[cj].double()).norm(dim=1).numpy(), cy)


def plot_map(features: torch.Tensor, labels: torch.Tensor, path, classes=(), title: str = "") -> Path:
    """Scatter of the test embeddings coloured by class: the coordinates themselves when 2-D
    (DrLIM's figure), the first two principal components otherwise."""
    from ..plots import _pyplot, project_2d

    plt = _pyplot()
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
    ax.set(title=title, xlabel="G_W(x)[0]" if features.shape[1] == 2 else "PC 1",
           ylabel="G_W(x)[1]" if features.shape[1] == 2 else "PC 2")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


COLUMNS = [("roc_auc", "ROC-AUC %"), ("eer", "EER %"), ("accuracy", "accuracy % (calibrated threshold)")]


def _finish(cfg, run_dir: Path, model, ds, log, baselines, final, f_test, wall) -> Dict[str, Any]:
    from .. import plots

    C.save_weights(run_dir / "model.safetensors", model)
    paths = {"loss_plot": plots.plot_loss(log.records, run_dir / "loss.png", "margin contrastive loss (train)")}
    if cfg.eval.map and len(f_test) >= 2:
        which = cfg.data.classes.replace(",", "") if cfg.data.classes else "all"
        paths["map_plot"] = plot_map(f_test, ds.test.y, run_dir / f"map_{which}.png", ds.classes,
                                     f"siamese ({cfg.pairs.source} pairs), test split, classes {cfg.data.classes or 'all'}")
    paths.update(checkpoint=run_dir / "checkpoints" / "last.pt", best_checkpoint=run_dir / "checkpoints" / "best.pt",
                 weights=run_dir / "model.safetensors", metrics=run_dir / "metrics.csv")
    if not paths["best_checkpoint"].exists():
        del paths["best_checkpoint"]
    rows = list(baselines.items()) + [(f"trained embedding (epoch {cfg.train.epochs})", final)]
    summary = {"run_dir": str(run_dir), "wall_time_s": wall, "baselines": baselines, "trained": final,
               "paths": {k: str(v) for k, v in paths.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nverification on held-out test pairs, score = -distance\n" + format_table(rows, COLUMNS) + "\n")
    print("\n".join(f"{k:>16}: {v}" for k, v in paths.items()))
    print(f"{'wall time':>16}: {wall:.1f} s", flush=True)
    return summary


def _load(run_dir, checkpoint: str):
    cfg, cfg_auto = eval_config(run_dir, checkpoint, "siamese", SiameseConfig)
    device, ds, _, model, *_ = _setup(cfg_auto)
    init, state = restore(model, run_dir, checkpoint, device)
    return cfg, device, ds, model, init, state


def evaluate_run(run_dir, checkpoint: str = "last") -> Dict[str, Any]:
    """Verification metrics of a run's checkpoint next to the baselines; prints the table and
    writes ``eval.json``."""
    cfg, device, ds, model, init, state = _load(run_dir, checkpoint)
    eval_pairs = _eval_pairs(cfg, ds)
    trained, _ = _evaluate(model, ds, eval_pairs, cfg, device)
    model.load_state_dict(init)
    rows = list(_baselines(model, ds, eval_pairs, cfg, device).items())
    rows.append((f"trained embedding ({checkpoint}.pt, epoch {state['epoch']})", trained))
    print("\n" + format_table(rows, COLUMNS) + "\n")
    result = {"checkpoint": checkpoint, "epoch": state["epoch"], "rows": dict(rows)}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_encoder(run_dir, checkpoint: str = "last"):
    """``(model, cfg)``: the trained map ``x -> G_W(x)`` of a run (eval mode) and its configuration."""
    cfg, _, _, model, *_ = _load(run_dir, checkpoint)
    return model.eval(), cfg


RECIPE = Recipe(name="siamese", help="Siamese / DrLIM: pairs from neighbours or labels, margin contrastive loss",
                config_cls=SiameseConfig, train=train, evaluate=evaluate_run, load_encoder=load_encoder)
