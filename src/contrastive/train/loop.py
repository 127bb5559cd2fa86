"""One training loop for every recipe.

A recipe is a :class:`Task`: its data, its model, how a batch is drawn, embedded and scored,
and how the model is evaluated. Everything around that is written once, here: the run folder
and its resolved configuration, seeding and threads, the optimiser and its schedule, AMP
(CUDA), gradient clipping, the non-finite loss and weights checks, atomic checkpoints and exact
``--resume``, DDP under ``torchrun``, the progress bar and metrics files, the evaluation
schedule, the best checkpoint, the final table, ``summary.json``, ``contrastive eval`` and
``contrastive embed``.

One training step, for a batch of indices ``idx``::

    batch = task.batch(idx, device)              # inputs (augmented views, pairs, tokens) + targets
    z = task.embed(net, batch.inputs)            # a tuple of embeddings, under autocast
    loss = task.loss(tuple(z_k.float()), batch)  # a scalar; every rank calls it (it may be collective)
    loss.backward(); clip; optimiser step; schedule step

The embedding and the loss are separate so that the loop can cut the embedding of a batch into
chunks (gradient caching) without the recipe knowing.

A recipe module then holds its configuration, a :class:`Task` subclass and the three public
functions :func:`recipe_functions` makes for it (``train``, ``evaluate_run``, ``load_encoder``;
see ``recipes/simclr.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, dist
from . import rundir as R
from .dist import num_threads, resolve_device, seed_everything
from .models import encoder_spec
from .optim import WarmupCosine, build_optimizer
from .rundir import check_run_id, eval_config, new_run_dir, read_run, restore, write_run
from .runlog import MetricsLog, NonFiniteLossError, Progress

__all__ = ["Batch", "Task", "evaluate_run", "load_encoder", "load_task", "recipe_functions", "train_run"]


@dataclasses.dataclass
class Batch:
    """One training batch as a recipe draws it.

    Attributes:
        inputs: what the model embeds, one entry per embedding the loss takes (two augmented
            views; the two sides of the pairs; queries and documents). Each entry is a tensor,
            or a dict / tuple of tensors (tokenised text), with the batch along dimension 0.
        targets: whatever else the loss needs (pair labels, class labels); ``None`` if nothing.
        size: the number of training items in the batch (for throughput and loss averages).
    """

    inputs: tuple[Any, ...]
    targets: Any = None
    size: int = 0


class Task:
    """What a recipe supplies to the loop; one instance per run (or per evaluation).

    Subclasses set :attr:`name` and override the methods that raise ``NotImplementedError``.
    ``self.cfg`` is the run's configuration; it must have the sections ``run``, ``optim``,
    ``train`` and ``eval`` (``eval.every``), and may have ``dist``.

    Attributes:
        name: the recipe's name (``run.json``'s ``recipe``).
        trained_name: the final table's label of the trained model ("trained encoder").
        throughput_key: the metrics key of the training throughput.
        nonfinite_hint: what the non-finite-loss message advises besides resuming.
        cfg, encoder: the run's configuration and the user's encoder (or ``None``).
        dist: the torchrun context (``dist.active``, ``dist.rank``); set before :meth:`prepare`.
        run_dir, resuming: the run folder, and whether it already existed (``--resume``, eval,
            embed); set before :meth:`prepare`, so a recipe can keep files there (a tokenizer).
        allow_changed_data: eval / embed / search may answer from data whose hash differs
            from the run's record (``--allow-changed-data``); ``notes``: what ``eval.json``
            records besides the rows (e.g. that the data changed).

    Examples:
        A third recipe in a few lines: two noisy copies of random vectors, a linear map, InfoNCE.

        >>> import dataclasses, tempfile
        >>> from contrastive import info_nce
        >>> from contrastive.train.config import OptimConfig, RunConfig, TrainConfig
        >>> @dataclasses.dataclass
        ... class EvalConfig:
        ...     every: int = 0  # evaluate only at the end
        >>> @dataclasses.dataclass
        ... class NoisyConfig:
        ...     run: RunConfig
        ...     optim: OptimConfig
        ...     train: TrainConfig
        ...     eval: EvalConfig
        >>> class Noisy(Task):
        ...     name = "noisy"
        ...     def run_name(self):
        ...         return "noisy"
        ...     def prepare(self):
        ...         self.x = torch.randn(64, 5)
        ...         return len(self.x)
        ...     def build(self, device):
        ...         return nn.Linear(5, 3).to(device)
        ...     def batch(self, idx, device):
        ...         x = self.x[idx].to(device)
        ...         return Batch((x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)), size=len(idx))
        ...     def loss(self, z, batch):
        ...         return info_nce(z[0], z[1], temperature=0.5)
        ...     def evaluate(self, model):
        ...         return {"weight_norm": model.weight.detach().norm().item()}, None
        ...     def table(self, rows):
        ...         return "; ".join(f"{name}: {m['weight_norm']:.2f}" for name, m in rows)
        >>> cfg = NoisyConfig(RunConfig(root=tempfile.mkdtemp(), progress=False, device="cpu"),
        ...                   OptimConfig(warmup_epochs=0), TrainConfig(epochs=2, batch_size=16), EvalConfig())
        >>> summary = train_run(Noisy(cfg))  # doctest: +ELLIPSIS
        noisy: training .../noisy on cpu
        ...
        >>> list(summary["trained"]), sorted(p.name for p in Path(summary["run_dir"]).iterdir())
        (['weight_norm'], ['checkpoints', 'config.toml', 'metrics.csv', 'metrics.jsonl', 'model.safetensors', 'run.json', 'summary.json'])
    """

    name = ""
    trained_name = "trained encoder"
    throughput_key = "samples_per_s"
    nonfinite_hint = "a lower optim.lr or train.grad_clip > 0"

    def __init__(self, cfg: Any, encoder: Any | None = None):
        if encoder is not None:  # the run records where the encoder came from (config.toml's model.encoder)
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, encoder=encoder_spec(encoder))
            )
        self.cfg = cfg
        self.encoder = encoder  # the user's own encoder (a module or a factory) when given from Python
        self.dist = dist.Context()  # the loop sets the torchrun context before building
        self.run_dir: Path | None = (
            None  # the run folder (set before prepare; e.g. to save a tokenizer there)
        )
        self.resuming = False  # True when prepare/build run for --resume, eval or embed of an existing run
        self.allow_changed_data = False  # eval/embed/search: answer from data that changed since training
        self.notes: dict[str, Any] = {}  # what eval.json records besides the rows (e.g. changed data)

    # -- data and model -------------------------------------------------------------------
    def run_name(self) -> str:
        """The run folder's default name (``run.name`` empty)."""
        return f"{self.name}-{self.cfg.data.name}"

    def prepare_model(self) -> None:
        """What :meth:`build` needs without the training data (``embed`` of a user's file);
        by default everything :meth:`prepare` loads."""
        self.prepare()

    def prepare(self) -> int:
        """Load and check the data (before seeding); return the number of training items an
        epoch visits (samples, pairs)."""
        raise NotImplementedError

    def build(self, device: torch.device) -> nn.Module:
        """The model on ``device`` (called right after ``seed_everything(run.seed)``), and
        anything else the steps need (augmentations)."""
        raise NotImplementedError

    def run_info(self) -> dict[str, Any]:
        """Extra entries of ``run.json`` (e.g. ``sample_shape`` for ``contrastive embed``)."""
        return {}

    def batch(self, idx: torch.Tensor, device: torch.device) -> Batch:
        """The training batch of the items ``idx`` (random augmentations drawn here)."""
        raise NotImplementedError

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The embedding the loss sees of one input tensor (``net`` may be DDP-wrapped)."""
        return net(x)

    def embed(self, net: nn.Module, inputs: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        """Embeddings of every input. Default: one tower for all, one forward pass over their
        concatenation (so BatchNorm sees the whole batch), split back."""
        sizes = [len(x) for x in inputs]
        z = self.forward(net, torch.cat(list(inputs)))  # (sum of sizes, d)
        return tuple(z.split(sizes))

    def towers(self, net: nn.Module) -> tuple[nn.Module, ...]:
        """The modules that embed the inputs for gradient caching (``train.chunk_size``): one
        for all inputs, or one per input (a module may repeat, e.g. ``(query_tower, doc_tower,
        doc_tower)`` for queries, positives and hard negatives). Default: one tower calling
        :meth:`forward` through ``net`` (so DDP sees the forward)."""
        return (_Tower(net, self.forward),)

    def loss(self, embeddings: tuple[torch.Tensor, ...], batch: Batch) -> torch.Tensor:
        """The scalar loss of a batch's embeddings (float32, or the model's dtype if wider)."""
        raise NotImplementedError

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> tuple[dict[str, float], Any]:
        """Held-out metrics of ``model`` and whatever :meth:`score` and :meth:`plots` need
        (e.g. the test embeddings); must leave every random generator as it was."""
        raise NotImplementedError

    def baselines(self, model: nn.Module) -> dict[str, dict[str, float]]:
        """``{row name: metrics}`` for the final table (``model`` is the initialisation)."""
        return {}

    def initial_record(self, baselines: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Metrics of epoch 0 (the randomly initialised model) for ``metrics.jsonl``."""
        return {}

    def score(self, metrics: dict[str, Any], extra: Any) -> float:
        """The number ``best.pt`` maximises (-1 when the epoch was not evaluated)."""
        return -1.0

    def header(self, what: str, run_dir: Path, device: torch.device) -> str:
        """The line printed when training starts; ``what`` is e.g. ``training`` or
        ``resuming (2 processes, global batch 2 x 128)``."""
        return f"{self.name}: {what} {run_dir} on {device}"

    def plots(self, run_dir: Path, records: list[dict[str, Any]], baselines, final, extra) -> dict[str, Path]:
        """Write the run's plots; ``{name: path}``."""
        return {}

    def export(self, run_dir: Path, model: nn.Module) -> dict[str, Path]:
        """Write the trained model in other formats (after the weights); ``{name: path}``."""
        return {}

    def summary_extra(self) -> dict[str, Any]:
        """Entries of ``summary.json`` between the wall time and the baselines."""
        return {}

    def table(self, rows: list[tuple[str, dict[str, Any]]]) -> str:
        """The final table of ``(label, metrics)`` rows, as printed."""
        raise NotImplementedError

    def encoder_of(self, model: nn.Module) -> nn.Module:
        """The module ``contrastive embed`` runs (the representation a user keeps)."""
        return model


class _Tower(nn.Module):
    """``x -> forward(net, x)`` as a module for :class:`contrastive.GradCache`; it exposes the
    DDP wrapper's ``no_sync`` so that gradients are all-reduced once per step."""

    def __init__(self, net: nn.Module, forward: Callable[[nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.net, self._forward = net, forward

    def forward(self, x: Any) -> torch.Tensor:
        return self._forward(self.net, x)

    def no_sync(self):
        no_sync = getattr(self.net, "no_sync", None)
        return no_sync() if callable(no_sync) else contextlib.nullcontext()


def _rows(x: Any) -> int:
    """Rows of one input: a tensor, or the first tensor of a dict / tuple."""
    if isinstance(x, torch.Tensor):
        return len(x)
    first = next(iter(x.values() if isinstance(x, dict) else x))
    return _rows(first)


def _upcast(z: torch.Tensor) -> torch.Tensor:
    """Half-precision embeddings (autocast) to float32; float32 and float64 as they are."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _step(
    task: Task,
    net: nn.Module,
    batch: Batch,
    chunk_size: int,
    scaler,
    amp_dtype,
    check: Callable[[float], None],
) -> float:
    """One forward and backward of ``batch``, gradients left in ``.grad`` (zeroed first by the
    caller); returns the loss value. ``check(value)`` runs before any backward in the plain path
    (it raises on a non-finite loss); with gradient caching the backward is part of the cached
    step and ``check`` runs after it (the caller has not stepped the optimiser yet)."""
    if chunk_size and any(_rows(x) > chunk_size for x in batch.inputs):
        from ..gradcache import GradCache

        cache = GradCache(task.towers(net), chunk_size, scaler=scaler, autocast=amp_dtype)
        loss = cache.step(lambda *z: task.loss(tuple(_upcast(t) for t in z), batch), *batch.inputs)
        value = float(loss)
        check(value)
        return value
    amp = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with amp:
        embeddings = task.embed(net, batch.inputs)
    # every rank calls the loss (it may be collective), then every rank learns whether all were finite
    loss = task.loss(tuple(_upcast(z) for z in embeddings), batch)
    value = float(loss.detach())
    check(value)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return value


# ----------------------------------------------------------------------------- training
def train_run(task: Task, resume: str | None = None) -> dict[str, Any]:
    """Train ``task`` (a fresh run, or continue the run folder ``resume``).

    Returns:
        The summary (also written to ``summary.json``) on the main process; under torchrun,
        ``{"run_dir", "rank"}`` on the others.

    Raises:
        NonFiniteLossError: the loss or the weights became NaN/Inf; the last good checkpoint
            is kept.
        ConfigError, ValueError, FileNotFoundError: bad settings or data.
    """
    cfg = task.cfg
    with num_threads(cfg.run.threads):
        ctx = dist.init(
            _dist_config(cfg), resolve_device(cfg.run.device)
        )  # inactive unless torchrun started > 1
        summary = _fit(task, resume, ctx)
        dist.shutdown(ctx)
        return summary


def _dist_config(cfg) -> dist.DistConfig:
    return getattr(cfg, "dist", None) or dist.DistConfig()


def _setup(task: Task, world: int = 1):
    """Data, model (built right after seeding), optimiser and schedule; with ``world`` > 1
    processes, ``bs`` and ``steps`` are per rank (each holds 1/world of the items)."""
    cfg = task.cfg
    device = resolve_device(cfg.run.device)
    n_items = task.prepare()
    seed_everything(cfg.run.seed)
    model = task.build(device)
    opt = build_optimizer(cfg.optim, model)
    t = cfg.train
    n = n_items if world == 1 else (n_items // world if t.drop_last else -(-n_items // world))
    bs = min(t.batch_size, n)
    steps = n // bs if t.drop_last else -(-n // bs)
    sched = WarmupCosine(
        opt, cfg.optim.warmup_epochs * steps, t.epochs * steps, cfg.optim.min_lr_ratio, cfg.optim.schedule
    )
    return device, model, opt, sched, n_items, bs, steps


def _state(model, opt, sched, scaler, epoch, step, best, baselines, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,  # run.json's: a checkpoint copied from another run is refused
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step": step,
        "best": best,
        "baselines": baselines,
        "rng": checkpoint.capture_rng(),
    }


def _encoder_info(cfg) -> dict[str, Any]:
    """``run.json`` entries for a user's encoder: its spec and the file it was imported from."""
    spec = getattr(getattr(cfg, "model", None), "encoder", "")
    if not isinstance(spec, str) or not spec.startswith(("python:", "object:")):
        return {}
    import sys

    module = sys.modules.get(spec[len("python:") :].split(":")[0]) if spec.startswith("python:") else None
    return {"encoder": spec, "encoder_file": getattr(module, "__file__", None)}


def _all_finite(value: float, dc: dist.Context) -> bool:
    """Whether the loss is finite on every rank (an all-reduce under torchrun), so that all
    ranks stop at the same step even when the loss is not a collective one."""
    finite = bool(torch.isfinite(torch.tensor(value)))
    if not dc.active:
        return finite
    import torch.distributed as tdist

    flag = torch.tensor([1.0 if finite else 0.0])
    if tdist.get_backend() == "nccl":
        flag = flag.cuda()
    tdist.all_reduce(flag, op=tdist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def _fit(task: Task, resume: str | None, dc: dist.Context) -> dict[str, Any]:
    """The run folder's life around :func:`_train`: locked while training (the main process
    holds ``.lock``), temporary files of a killed write removed at the start, a ``--resume``
    checked before anything is written, and a fresh folder removed again when the run fails
    before its first checkpoint."""
    cfg = task.cfg
    main = dc.is_main  # rank 0 (or the single process) writes, logs, evaluates and prints
    created, lock = False, None
    try:
        if resume is not None:
            run_dir = Path(resume)
            read_run(run_dir)  # a clear error when it is not a run folder, before taking a lock in it
            lock = R.acquire_lock(run_dir) if main else None
            changes = R.check_resume(run_dir, cfg, task.name)  # refuses before anything is touched
        else:
            changes = []
            if main:
                target = Path(cfg.run.root) / (cfg.run.name or task.run_name())
                reused = cfg.run.overwrite and target.is_dir() and any(target.iterdir())
                if reused:
                    R.check_unlocked(target)  # --run.overwrite must not clear a live run's files
                run_dir = new_run_dir(
                    cfg.run.root, cfg.run.name or task.run_name(), cfg.run.overwrite, unique=not cfg.run.name
                )
                created = not reused  # only a folder this run made is removed again on failure
                lock = R.acquire_lock(run_dir)
            run_dir = Path(dist.broadcast(str(run_dir) if main else None, dc))
        if main:
            R.clean_tmp(run_dir)
        return _train(task, resume, dc, run_dir, changes)
    except BaseException:
        if created and not (run_dir / "checkpoints" / "last.pt").exists():
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start leaves no empty run folder
        raise
    finally:
        R.release_lock(lock)


def _train(
    task: Task, resume: str | None, dc: dist.Context, run_dir: Path, changes: list[str]
) -> dict[str, Any]:
    cfg = task.cfg
    t_start = time.perf_counter()
    main = dc.is_main
    task.dist, task.run_dir, task.resuming = dc, run_dir, resume is not None
    device, model, opt, sched, n_items, bs, steps = _setup(task, dc.world_size)
    device = dist.device_for(dc, device)
    dist.seed_rank(
        dc, cfg.run.seed
    )  # own augmentations per rank; the weights are already the same everywhere
    net = dist.wrap(model, dc, _dist_config(cfg), device)  # DDP(model) under torchrun, model itself otherwise
    sampler = dist.sampler(n_items, dc, cfg.run.seed, cfg.train.drop_last) if dc.active else None
    # the run's identity, kept by --resume: every checkpoint carries it (see rundir.check_run_id)
    run_id = (read_run(run_dir).get("run_id") if resume is not None else None) or uuid.uuid4().hex
    if main and resume is None:
        write_run(run_dir, cfg, task.name, run_id=run_id, **task.run_info(), **_encoder_info(cfg))
    ckpt_dir = run_dir / "checkpoints"
    use_amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    log = MetricsLog(run_dir, cfg.run.tensorboard) if main else dist.NullLog()
    step, best, baselines = 0, -1.0, {}

    def save(names, epoch):  # collective under torchrun (every rank's generators go into rank 0's file)
        ranks = dist.gather_rng(dc)
        if main:
            state = _state(model, opt, sched, scaler, epoch, step, best, baselines, run_id)
            if ranks is not None:
                state["rng_ranks"] = ranks
            if "last.pt" in names and (ckpt_dir / "last.pt").exists():
                os.replace(ckpt_dir / "last.pt", ckpt_dir / "prev.pt")  # kept for a roll back (see below)
            for name in names:
                checkpoint.save_checkpoint(ckpt_dir / name, state)

    if resume is not None:
        state = checkpoint.load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        check_run_id(state, run_dir, ckpt_dir / "last.pt")
        checkpoint.load_model_state(model, state, ckpt_dir / "last.pt")
        _restore_schedule(opt, sched, state)  # the optimiser's state, this run's settings
        if main:  # only now, with the checkpoint known to fit, is the run folder changed
            write_run(run_dir, cfg, task.name, run_id=run_id, **task.run_info(), **_encoder_info(cfg))
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, step, best, baselines = state["epoch"], state["step"], state["best"], state["baselines"]
        checkpoint.restore_rng(state["rng"])
        if dc.active:
            dist.restore_rank_rng(dc, state, cfg.run.seed, start)
        log.truncate(start)
    else:
        start = 0
        baselines = task.baselines(model) if main else {}
        log.log({"epoch": 0, **task.initial_record(baselines)})  # the randomly initialised model
        save(["last.pt"], 0)
    if main:
        what = "resuming" if resume is not None else "training"
        if changes:
            what += f" (changed: {', '.join(changes)})"
        if dc.world_size > 1:
            what += f" ({dc.world_size} processes, global batch {dc.world_size} x {bs})"
        line = task.header(what, run_dir, device)
        if cfg.train.chunk_size:
            line += (
                f"; gradient caching: batch {bs} embedded in chunks of {cfg.train.chunk_size} rows per input"
            )
        print(line, flush=True)
    progress = Progress(cfg.train.epochs * steps, start * steps, cfg.run.progress and main)
    final, extra, lr = None, None, opt.param_groups[0]["lr"]
    hint = f"Resume from it (--resume {run_dir}) with {task.nonfinite_hint}."
    try:
        for epoch in range(start + 1, cfg.train.epochs + 1):
            model.train()
            if sampler is None:
                order = torch.randperm(n_items)
            else:
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler))  # this rank's share of the epoch
            total, seen, t0 = 0.0, 0, time.perf_counter()
            for s in range(steps):
                idx = order[s * bs : (s + 1) * bs]
                batch = task.batch(idx, device)

                # epoch and s bound now: check runs within this step only
                def check(value: float, epoch: int = epoch, s: int = s) -> None:
                    if not _all_finite(value, dc):
                        shown = (
                            value if not torch.isfinite(torch.tensor(value)) else "NaN/Inf on another process"
                        )
                        log.log({"epoch": epoch, "event": f"non-finite loss ({shown}) at step {s + 1}"})
                        good = epoch - 1
                        if s == 0 and main and (ckpt_dir / "prev.pt").exists():
                            # the first loss of an epoch is the last checkpoint's own: no learning rate
                            # can resume from it, so the one before becomes last.pt
                            os.replace(ckpt_dir / "prev.pt", ckpt_dir / "last.pt")
                            good = epoch - 2
                        raise NonFiniteLossError(
                            f"the loss became {shown} at epoch {epoch}, step {s + 1}: training stopped. The last "
                            f"good checkpoint, {ckpt_dir / 'last.pt'} (epoch {good}), was kept. {hint}"
                        )

                opt.zero_grad(set_to_none=True)
                value = _step(
                    task, net, batch, cfg.train.chunk_size, scaler, amp_dtype if use_amp else None, check
                )
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
                n = batch.size or len(idx)
                total += value * n
                seen += n
                progress.update(epoch, value, lr, seen * dc.world_size / max(time.perf_counter() - t0, 1e-9))
            elapsed = time.perf_counter() - t0
            record = {
                "epoch": epoch,
                "loss": total / seen,
                "lr": lr,
                task.throughput_key: seen * dc.world_size / elapsed,
                "epoch_time_s": elapsed,
            }
            evaluated = main and (
                epoch == cfg.train.epochs or bool(cfg.eval.every and epoch % cfg.eval.every == 0)
            )
            if evaluated:
                final, extra = task.evaluate(model)
                record.update(final)
                progress.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
            log.log(record)
            bad = checkpoint.all_finite_state(model, opt)  # weights, BatchNorm statistics, optimiser state
            if bad is not None:
                raise NonFiniteLossError(
                    f"the weights became NaN/Inf during epoch {epoch} ({bad}; the loss was still finite): training "
                    f"stopped. "
                    f"The last good checkpoint, {ckpt_dir / 'last.pt'} (epoch {epoch - 1}), was kept; resume from it "
                    f"with {task.nonfinite_hint}."
                )
            score = task.score(record, extra) if evaluated else -1.0
            improved = score > best
            best = max(best, score)
            save(["last.pt", "best.pt"] if improved else ["last.pt"], epoch)
    finally:
        progress.close()
        log.close()
    if main:
        (ckpt_dir / "prev.pt").unlink(missing_ok=True)  # only a run in progress may need to roll back
    if not main:
        return {"run_dir": str(run_dir), "rank": dc.rank}
    if final is None:  # resumed a run that had already finished
        final, extra = task.evaluate(model)
    return _finish(task, run_dir, model, log, baselines, final, extra, time.perf_counter() - t_start)


def _restore_schedule(opt, sched, state) -> None:
    """Load the optimiser's and the scheduler's state, keeping this run's settings: the
    hyperparameters the optimiser was built with (learning rate, momentum, weight decay) and
    the schedule (warm-up, length, shape) replace the saved ones, at the saved step. With the
    settings unchanged this is exactly the saved state."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    for group, settings in zip(opt.param_groups, fresh):
        group.update(settings)
    sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
    for group, lr in zip(opt.param_groups, sched.get_lr()):
        group["lr"] = lr
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def _finish(task: Task, run_dir: Path, model, log, baselines, final, extra, wall) -> dict[str, Any]:
    """Weights, plots, ``summary.json`` and the final table."""
    checkpoint.save_weights(run_dir / "model.safetensors", model)
    paths = dict(task.plots(run_dir, log.records, baselines, final, extra))
    paths.update(task.export(run_dir, model))
    paths.update(
        checkpoint=run_dir / "checkpoints" / "last.pt",
        best_checkpoint=run_dir / "checkpoints" / "best.pt",
        weights=run_dir / "model.safetensors",
        metrics=run_dir / "metrics.csv",
    )
    if not paths["best_checkpoint"].exists():
        del paths["best_checkpoint"]
    rows = list(baselines.items()) + [(f"{task.trained_name} (epoch {task.cfg.train.epochs})", final)]
    summary = {
        "run_dir": str(run_dir),
        "wall_time_s": wall,
        **task.summary_extra(),
        "baselines": baselines,
        "trained": final,
        "paths": {k: str(v) for k, v in paths.items()},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(task.table(rows))
    print("\n".join(f"{k:>16}: {v}" for k, v in paths.items()))
    print(f"{'wall time':>16}: {wall:.1f} s", flush=True)
    return summary


# ----------------------------------------------------------------------------- a finished run
def load_task(
    task_cls: type[Task],
    config_cls: type,
    run_dir,
    checkpoint: str,
    encoder=None,
    *,
    data: bool = True,
    allow_changed_data: bool = False,
):
    """The task of a run (on the best available device) with its checkpoint loaded: ``(task,
    model, initial model state, checkpoint state)``; recipes use it for their own commands
    (``contrastive search``). ``data=False`` loads only what the model needs (no training
    data); ``allow_changed_data`` lets a recipe answer from data whose hash differs from the
    one the run recorded (it says so in ``task.notes``)."""
    cfg, cfg_auto = eval_config(run_dir, checkpoint, task_cls.name, config_cls)
    task = task_cls(cfg_auto, encoder)
    task.run_dir, task.resuming, task.allow_changed_data = Path(run_dir), True, allow_changed_data
    device = resolve_device(cfg_auto.run.device)
    if data:
        task.prepare()
    else:
        task.prepare_model()
    seed_everything(cfg_auto.run.seed)
    try:
        model = task.build(device)
    except ImportError as err:  # a user's encoder whose module is not importable here
        where = read_run(run_dir).get("encoder_file")
        raise ImportError(f"{err}; the run imported it from {where}" if where else str(err)) from None
    init, state = restore(model, run_dir, checkpoint, device)
    return task, model, init, state


def evaluate_run(
    task_cls: type[Task],
    config_cls: type,
    run_dir,
    checkpoint: str = "last",
    encoder=None,
    *,
    allow_changed_data: bool = False,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint (``last`` or ``best``) next to the baselines; prints the
    table and writes ``eval.json``."""
    task, model, init, state = load_task(
        task_cls, config_cls, run_dir, checkpoint, encoder, allow_changed_data=allow_changed_data
    )
    with num_threads(task.cfg.run.threads):
        trained, _ = task.evaluate(model)
        model.load_state_dict(init)
        rows = list(task.baselines(model).items())
    rows.append((f"{task.trained_name} ({checkpoint}.pt, epoch {state['epoch']})", trained))
    print(task.table(rows))
    result = {"checkpoint": checkpoint, "epoch": state["epoch"], "rows": dict(rows), **task.notes}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_encoder(task_cls: type[Task], config_cls: type, run_dir, checkpoint: str = "last", encoder=None):
    """``(module, cfg)``: the trained encoder of a run (eval mode) and its configuration."""
    task, model, *_ = load_task(task_cls, config_cls, run_dir, checkpoint, encoder)
    return task.encoder_of(model).eval(), task.cfg


def recipe_functions(task_cls: type[Task], config_cls: type) -> tuple[Callable, Callable, Callable]:
    """``(train, evaluate_run, load_encoder)`` of a recipe, typed on its configuration class:
    the three public functions of every recipe module, written once here.

    Examples:
        >>> from contrastive.train.recipes import simclr
        >>> simclr.train.__module__, simclr.train.__qualname__
        ('contrastive.train.recipes.simclr', 'train')
    """

    def train(cfg, resume: str | None = None, *, encoder=None) -> dict[str, Any]:
        """Train the recipe as ``cfg`` says; with ``resume``, continue the run in that directory.

        Args:
            cfg: the configuration (the recipe's configuration class).
            resume: a run directory to continue from its ``checkpoints/last.pt``.
            encoder: your own encoder instead of the one ``model.encoder`` names: a factory
                (recorded in the run by its import path, so ``eval``, ``embed`` and ``--resume``
                rebuild it; the image recipes call ``factory(sample_shape, embed_dim)``, see
                :func:`contrastive.train.models.build_encoder`), or a module (then pass the same
                module again to resume or evaluate from Python).

        Returns:
            The summary (also written to ``summary.json``): the run directory, the baselines and
            final metrics, the paths of checkpoints and plots, the wall time.

        Raises:
            NonFiniteLossError: the loss (or the weights) became NaN/Inf; the last good
                checkpoint is kept.
            ConfigError, ValueError, FileNotFoundError: bad settings or data.
        """
        if not isinstance(cfg, config_cls):
            raise TypeError(f"cfg must be a {config_cls.__name__}, got {type(cfg).__name__}")
        return train_run(task_cls(cfg, encoder), resume)

    def evaluate_run_(
        run_dir, checkpoint: str = "last", *, encoder=None, allow_changed_data: bool = False
    ) -> dict[str, Any]:
        """Evaluate a run's checkpoint (``last`` or ``best``) next to the recipe's baselines;
        prints the table and writes ``eval.json``. ``allow_changed_data``: answer even when the
        run's data file changed since training (text runs; the output says so)."""
        return evaluate_run(
            task_cls, config_cls, run_dir, checkpoint, encoder, allow_changed_data=allow_changed_data
        )

    def load_encoder_(run_dir, checkpoint: str = "last", *, encoder=None):
        """``(encoder, cfg)``: the trained encoder of a run (eval mode) and its configuration."""
        return load_encoder(task_cls, config_cls, run_dir, checkpoint, encoder)

    functions = (train, evaluate_run_, load_encoder_)
    for f, name in zip(functions, ("train", "evaluate_run", "load_encoder")):
        f.__module__, f.__name__, f.__qualname__ = task_cls.__module__, name, name
    return functions
