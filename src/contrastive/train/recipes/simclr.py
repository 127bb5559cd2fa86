"""SimCLR (Chen et al. 2020), seed 001's procedure end to end.

For every batch: two augmented views of each sample, the encoder f and projection head g,
``z = g(f(x))``, the InfoNCE loss on cosine similarities with the self-similarity excluded
from the denominator (:func:`contrastive.info_nce`), backpropagation, an optimiser step.
Around it: held-out evaluation (weighted kNN, linear probe, alignment and uniformity) every
``eval.every`` epochs and at the end, checkpoints every epoch and for the best kNN accuracy,
``--resume``, a progress bar, metrics files, plots and a final table that compares raw
pixels, the randomly initialised encoder and the trained encoder on one test split.

Run it with ``contrastive train simclr``; the defaults train a small CNN on scikit-learn's
digits in about a minute on two CPU cores.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ... import info_nce
from ... import distributed as cd
from .. import augment as A
from .. import dist as D
from .. import checkpoint as C
from ..config import (AugmentConfig, ConfigError, DataConfig, EvalConfig, ModelConfig, OptimConfig, RunConfig,
                      TrainConfig, _require)
from ..data import Dataset, load_dataset, to_float
from ..evaluate import alignment, embed, evaluate_features, uniformity
from ..models import SimCLRModel, build_model
from ..optim import WarmupCosine, build_optimizer
from ..runlog import MetricsLog, NonFiniteLossError, Progress, format_table, new_run_dir
from ..runtime import (channel_stats, eval_config, limit_threads, restore, num_threads, read_run, resolve_device,
                       seed_everything, write_run)
from . import Recipe

__all__ = ["LossConfig", "SimCLRConfig", "evaluate_run", "load_encoder", "train"]


@dataclasses.dataclass
class LossConfig:
    """InfoNCE settings."""

    temperature: float = 0.3  # tuned on digits: 0.3-0.4 beat 0.2 and 0.5 for kNN accuracy
    exclude_self: bool = True  # SimCLR's denominator (seed 001); false keeps k = i (seed 002)

    def __post_init__(self):
        _require(self.temperature > 0, "loss.temperature", f"must be > 0, got {self.temperature}; SimCLR uses 0.1-0.5")


@dataclasses.dataclass
class SimCLRConfig:
    """Every setting of a SimCLR run, one section per concern."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    dist: D.DistConfig = dataclasses.field(default_factory=D.DistConfig)  # multi-process runs (torchrun)


class _Projector(nn.Module):
    """``x -> z`` of a SimCLR model (for alignment and uniformity)."""

    def __init__(self, model: SimCLRModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[1]


def _labelled(ds: Dataset) -> bool:
    return len(ds.train) > 0 and bool((ds.train.y >= 0).all()) and bool((ds.test.y >= 0).all())


@torch.no_grad()
def _evaluate(model: SimCLRModel, ds: Dataset, aug: nn.Module, cfg: SimCLRConfig, device) -> Tuple[Dict, torch.Tensor]:
    """Held-out metrics of the encoder; leaves every random generator as it was."""
    e = cfg.eval
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), limit_threads(e.threads):
        f_test = embed(model.encoder, ds.test.x, e.batch_size, device)
        out: Dict[str, float] = {}
        if _labelled(ds):
            f_train = embed(model.encoder, ds.train.x, e.batch_size, device)
            out.update(evaluate_features(f_train, ds.train.y, f_test, ds.test.y, e.knn_k, e.knn_temperature,
                                         e.probe, e.probe_C, e.probe_max_iter))
        x = to_float(ds.test.x[:2048]).to(device)
        v1, v2 = A.two_views(aug, x, seed=cfg.run.seed)
        proj = _Projector(model)
        z1, z2 = embed(proj, v1, e.batch_size, device), embed(proj, v2, e.batch_size, device)
        out["alignment"] = alignment(z1, z2)
        out["uniformity"] = uniformity(embed(proj, x, e.batch_size, device))
    return out, f_test


def _baselines(model: SimCLRModel, ds: Dataset, aug, cfg: SimCLRConfig, device) -> Dict[str, Dict[str, float]]:
    """Raw pixels and the randomly initialised encoder, on the same split."""
    e = cfg.eval
    if not (e.baselines and _labelled(ds)):
        return {}
    with limit_threads(e.threads):
        raw = evaluate_features(to_float(ds.train.x).flatten(1), ds.train.y, to_float(ds.test.x).flatten(1),
                                ds.test.y, e.knn_k, e.knn_temperature, e.probe, e.probe_C, e.probe_max_iter)
    init, _ = _evaluate(model, ds, aug, cfg, device)
    return {"raw pixels": raw, "random encoder": init}


def _setup(cfg: SimCLRConfig, world: int = 1):
    """Data, model, augmentation, optimiser and schedule for ``cfg`` (model built right after seeding);
    with ``world`` > 1 processes, ``bs`` and ``steps`` are per rank (each holds 1/world of the split)."""
    device = resolve_device(cfg.run.device)
    ds = load_dataset(cfg.data)
    if len(ds.train) < 2:
        raise ConfigError(f"the training split has {len(ds.train)} sample(s); SimCLR needs at least 2")
    seed_everything(cfg.run.seed)
    mean, std = channel_stats(ds.train.x)
    model = build_model(cfg.model, ds.sample_shape, mean, std).to(device)
    aug = A.build_augment(cfg.augment, ds.sample_shape).to(device)
    opt = build_optimizer(cfg.optim, model)
    n = len(ds.train) if world == 1 else (len(ds.train) // world if cfg.train.drop_last else -(-len(ds.train) // world))
    bs = min(cfg.train.batch_size, n)
    steps = n // bs if cfg.train.drop_last else -(-n // bs)
    sched = WarmupCosine(opt, cfg.optim.warmup_epochs * steps, cfg.train.epochs * steps, cfg.optim.min_lr_ratio,
                         cfg.optim.schedule)
    return device, ds, model, aug, opt, sched, bs, steps


def _state(model, opt, sched, scaler, epoch, step, best, baselines) -> Dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch, "step": step,
            "best": best, "baselines": baselines, "rng": C.capture_rng()}


def train(cfg: SimCLRConfig, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train SimCLR as ``cfg`` says; with ``resume``, continue the run in that directory.

    Returns:
        The summary (also written to ``summary.json``): the run directory, the baselines and
        final metrics, the paths of checkpoints and plots, the wall time.

    Raises:
        NonFiniteLossError: the loss (or the weights) became NaN/Inf; the last good
            checkpoint is kept.
        ConfigError, ValueError, FileNotFoundError: bad settings or data.
    """
    if not isinstance(cfg, SimCLRConfig):
        raise TypeError(f"cfg must be a SimCLRConfig, got {type(cfg).__name__}")
    with num_threads(cfg.run.threads):
        ctx = D.init(cfg.dist, resolve_device(cfg.run.device))  # inactive unless torchrun started > 1 process
        summary = _train(cfg, resume, ctx)
        D.shutdown(ctx)
        return summary


def _train(cfg: SimCLRConfig, resume: Optional[str], dc: D.Context) -> Dict[str, Any]:
    t_start = time.perf_counter()
    main = dc.is_main  # rank 0 (or the single process) writes, logs, evaluates and prints
    if resume is not None:
        run_dir = Path(resume)
        if read_run(run_dir)["recipe"] != "simclr":
            raise ValueError(f"{run_dir} is not a simclr run; resume it with its own recipe")
    else:
        run_dir = new_run_dir(cfg.run.root, cfg.run.name or f"simclr-{cfg.data.name}", cfg.run.overwrite) if main else None
        run_dir = Path(D.broadcast(str(run_dir) if main else None, dc))
    device, ds, model, aug, opt, sched, bs, steps = _setup(cfg, dc.world_size)
    device = D.device_for(dc, device)
    D.seed_rank(dc, cfg.run.seed)  # own augmentations per rank; the weights are already the same everywhere
    net = D.wrap(model, dc, cfg.dist, device)  # DDP(model) under torchrun, model itself otherwise
    sampler = D.sampler(len(ds.train), dc, cfg.run.seed, cfg.train.drop_last) if dc.active else None
    loss_fn = cd.info_nce if dc.active else info_nce  # global-batch negatives, exact DDP gradients
    if main:
        write_run(run_dir, cfg, "simclr", sample_shape=list(ds.sample_shape))
    ckpt_dir = run_dir / "checkpoints"
    use_amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    log = MetricsLog(run_dir, cfg.run.tensorboard) if main else D.NullLog()

    def save(names, epoch):  # collective under torchrun (every rank's generators go into rank 0's file)
        ranks = D.gather_rng(dc)
        if main:
            state = _state(model, opt, sched, scaler, epoch, step, best, baselines)
            if ranks is not None:
                state["rng_ranks"] = ranks
            for name in names:
                C.save_checkpoint(ckpt_dir / name, state)

    if resume is not None:
        state = C.load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, step, best, baselines = state["epoch"], state["step"], state["best"], state["baselines"]
        C.restore_rng(state["rng"])
        if dc.active:
            D.restore_rank_rng(dc, state, cfg.run.seed, start)
        log.truncate(start)
    else:
        start, step, best = 0, 0, -1.0
        baselines = _baselines(model, ds, aug, cfg, device) if main else {}
        log.log({"epoch": 0, **baselines.get("random encoder", {})})  # the randomly initialised model
        save(["last.pt"], 0)
    if main:
        _print_header(cfg, ds, run_dir, device, start, model, dc.world_size)
    progress = Progress(cfg.train.epochs * steps, start * steps, cfg.run.progress and main)
    final, f_test = None, None
    try:
        for epoch in range(start + 1, cfg.train.epochs + 1):
            model.train()
            if sampler is None:
                order = torch.randperm(len(ds.train))
            else:
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler))  # this rank's share of the epoch
            total, seen, t0 = 0.0, 0, time.perf_counter()
            for s in range(steps):
                idx = order[s * bs:(s + 1) * bs]
                x = to_float(ds.train.x[idx].to(device, non_blocking=True))
                v1, v2 = A.two_views(aug, x)
                ctx = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
                with ctx:
                    _, z = net(torch.cat([v1, v2]))  # (2B, proj_dim)
                z1, z2 = z.float().chunk(2)
                # every rank calls the (collective) loss: NaN/Inf embeddings give a NaN loss everywhere
                loss = loss_fn(z1, z2, cfg.loss.temperature, exclude_self=cfg.loss.exclude_self, check_finite=False)
                value = float(loss.detach())
                if not torch.isfinite(loss.detach()):
                    log.log({"epoch": epoch, "event": f"non-finite loss ({value}) at step {s + 1}"})
                    raise NonFiniteLossError(
                        f"the loss became {value} at epoch {epoch}, step {s + 1}: training stopped. The last "
                        f"good checkpoint, {ckpt_dir / 'last.pt'} (epoch {epoch - 1}), was kept. Resume from it "
                        f"(--resume {run_dir}) with a lower optim.lr, train.grad_clip > 0 or a higher loss.temperature."
                    )
                opt.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if scaler is not None:
                    scaler.unscale_(opt)
                if cfg.train.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                lr = opt.param_groups[0]["lr"]
                sched.step()
                step += 1
                total += value * len(idx)
                seen += len(idx)
                progress.update(epoch, value, lr, seen * dc.world_size / max(time.perf_counter() - t0, 1e-9))
            elapsed = time.perf_counter() - t0
            record = {"epoch": epoch, "loss": total / seen, "lr": lr, "samples_per_s": seen * dc.world_size / elapsed,
                      "epoch_time_s": elapsed}
            if main and (epoch == cfg.train.epochs or (cfg.eval.every and epoch % cfg.eval.every == 0)):
                final, f_test = _evaluate(model, ds, aug, cfg, device)
                record.update(final)
                progress.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
            log.log(record)
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise NonFiniteLossError(
                    f"the weights became NaN/Inf during epoch {epoch} (the loss was still finite): training stopped. "
                    f"The last good checkpoint, {ckpt_dir / 'last.pt'} (epoch {epoch - 1}), was kept; resume from it "
                    f"with a lower optim.lr or train.grad_clip > 0.")
            improved = record.get("knn_accuracy", -1.0) > best
            best = max(best, record.get("knn_accuracy", -1.0))
            save(["last.pt", "best.pt"] if improved else ["last.pt"], epoch)
    finally:
        progress.close()
        log.close()
    if not main:
        return {"run_dir": str(run_dir), "rank": dc.rank}
    if final is None:  # resumed a run that had already finished
        final, f_test = _evaluate(model, ds, aug, cfg, device)
    return _finish(cfg, run_dir, model, ds, log, baselines, final, f_test, time.perf_counter() - t_start)


def _print_header(cfg, ds, run_dir, device, start, model, world: int = 1) -> None:
    what = "resuming" if start else "training"
    if world > 1:
        what += f" ({world} processes, global batch {world} x {cfg.train.batch_size})"
    print(f"simclr: {what} {run_dir} on {device}; data {ds.name} {tuple(ds.sample_shape)}, train {len(ds.train)}, "
          f"test {len(ds.test)}; encoder {type(model.encoder.backbone).__name__}, {cfg.train.epochs} epochs, batch "
          f"{cfg.train.batch_size}, {cfg.optim.name} lr {cfg.optim.lr}, temperature {cfg.loss.temperature}", flush=True)


def _finish(cfg, run_dir: Path, model, ds, log, baselines, final, f_test, wall) -> Dict[str, Any]:
    from .. import plots

    C.save_weights(run_dir / "model.safetensors", model)
    with limit_threads(cfg.eval.threads):
        paths = {"loss_plot": plots.plot_loss(log.records, run_dir / "loss.png")}
        if "knn_accuracy" in final:
            paths["accuracy_plot"] = plots.plot_accuracy(log.records, run_dir / "accuracy.png", baselines)
        if cfg.eval.map != "none" and _labelled(ds) and len(f_test) >= 2:
            f_unit = torch.nn.functional.normalize(f_test, dim=1)  # the geometry kNN and the loss see
            paths["map_plot"] = plots.plot_embedding_map(f_unit, ds.test.y, run_dir / f"map_{cfg.eval.map}.png",
                                                         cfg.eval.map, ds.classes, "trained encoder, test split")
    paths.update(checkpoint=run_dir / "checkpoints" / "last.pt", best_checkpoint=run_dir / "checkpoints" / "best.pt",
                 weights=run_dir / "model.safetensors", metrics=run_dir / "metrics.csv")
    if not paths["best_checkpoint"].exists():
        del paths["best_checkpoint"]
    rows = [(name, m) for name, m in baselines.items()] + [(f"trained encoder (epoch {cfg.train.epochs})", final)]
    summary = {"run_dir": str(run_dir), "wall_time_s": wall, "knn_k": cfg.eval.knn_k,
               "knn_temperature": cfg.eval.knn_temperature, "baselines": baselines, "trained": final,
               "paths": {k: str(v) for k, v in paths.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(_table(rows, cfg))
    print("\n".join(f"{k:>16}: {v}" for k, v in paths.items()))
    print(f"{'wall time':>16}: {wall:.1f} s", flush=True)
    return summary


def _table(rows, cfg) -> str:
    cols = [("knn_accuracy", f"kNN acc % (k={cfg.eval.knn_k}, T={cfg.eval.knn_temperature:g})"),
            ("linear_accuracy", "linear probe %"), ("precision_at_1", "P@1 %"),
            ("mean_average_precision_at_r", "MAP@R %")]
    text = "\n" + format_table(rows, cols)
    extra = [(name, m) for name, m in rows if "alignment" in m]
    if extra:
        text += "\n" + "\n".join(f"{name}: alignment {m['alignment']:.3f}, uniformity {m['uniformity']:.3f}"
                                 for name, m in extra)
    return text + "\n"


def _load(run_dir, checkpoint: str):
    cfg, cfg_auto = eval_config(run_dir, checkpoint, "simclr", SimCLRConfig)
    device, ds, model, aug, *_ = _setup(cfg_auto)
    init, state = restore(model, run_dir, checkpoint, device)
    return cfg, device, ds, model, aug, init, state


def evaluate_run(run_dir, checkpoint: str = "last") -> Dict[str, Any]:
    """Evaluate a run's checkpoint (``last`` or ``best``) next to raw pixels and the random
    initial encoder; prints the table and writes ``eval.json``."""
    cfg, device, ds, model, aug, init, state = _load(run_dir, checkpoint)
    with num_threads(cfg.run.threads):
        trained, _ = _evaluate(model, ds, aug, cfg, device)
        model.load_state_dict(init)
        rows = list(_baselines(model, ds, aug, cfg, device).items())
    rows.append((f"trained encoder ({checkpoint}.pt, epoch {state['epoch']})", trained))
    print(_table(rows, cfg))
    result = {"checkpoint": checkpoint, "epoch": state["epoch"], "rows": dict(rows)}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_encoder(run_dir, checkpoint: str = "last"):
    """``(encoder, cfg)``: the trained encoder of a run (eval mode) and its configuration."""
    cfg, _, _, model, *_ = _load(run_dir, checkpoint)
    return model.encoder.eval(), cfg


RECIPE = Recipe(name="simclr", help="SimCLR: two augmented views, encoder + projection head, InfoNCE",
                config_cls=SimCLRConfig, train=train, evaluate=evaluate_run, load_encoder=load_encoder)
