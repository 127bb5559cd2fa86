r"""Gradient caching: exact contrastive steps on batches larger than the encoder's memory.

A contrastive loss couples every row of the batch, so the batch cannot simply be split into
independent micro-batches. Gradient caching (Gao, Zhang, Han and Callan 2021) splits only
the *encoder's* work. With embeddings :math:`z = f_\theta(x)` of ``N`` rows cut into chunks
:math:`x_c`,

.. math::

    \frac{\partial \mathcal L}{\partial \theta}
        = \sum_c \Big(\frac{\partial z_c}{\partial \theta}\Big)^{\!\top}
          \frac{\partial \mathcal L}{\partial z_c},

so a step (1) embeds every chunk without a graph, (2) evaluates the loss on the whole batch
of embeddings and its gradient :math:`g = \partial \mathcal L / \partial z` (the library's
losses compute it during forward, so this costs one cheap backward), then (3) re-embeds each
chunk with a graph and back-propagates :math:`g_c` through it. Peak memory is one chunk's
activations plus the ``O(N d)`` embeddings; the price is a second encoder forward.

The second forward must compute exactly the first one's function, which is what
:class:`GradCache` takes care of: the random state (CPU and CUDA) is recorded per chunk and
replayed, so dropout masks match; BatchNorm running statistics are updated by the first
forward only; under ``DistributedDataParallel`` gradients are all-reduced once, on the last
chunk; a ``GradScaler`` scales the cached gradient. See ``docs/gradcache.md``.

References:
    Gao, Zhang, Han, Callan. Scaling Deep Contrastive Learning Batch Size under Memory
    Limited Setup. RepL4NLP 2021.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["GradCache"]

Leaves = list[torch.Tensor]
Rebuild = Callable[[Sequence[torch.Tensor]], Any]
RngState = tuple[torch.Tensor, list[torch.Tensor]]


# ----------------------------------------------------------------------------- nested batches
def _flatten(x: Any, where: str) -> tuple[Leaves, Rebuild]:
    """The tensors of a tensor / dict / tuple / list (nested), and a function that rebuilds
    the same structure from new tensors in the same order."""
    if isinstance(x, torch.Tensor):
        return [x], lambda leaves: leaves[0]
    if isinstance(x, Mapping):
        keys = list(x.keys())
        parts = [_flatten(x[k], f"{where}[{k!r}]") for k in keys]
    elif isinstance(x, (tuple, list)):
        keys = list(range(len(x)))
        parts = [_flatten(v, f"{where}[{k}]") for k, v in enumerate(x)]
    else:
        raise TypeError(
            f"{where} must be a tensor, or a dict, tuple or list of tensors (split along dim 0), got "
            f"{type(x).__name__}; keep non-tensor settings in the encoder or in a closure"
        )
    if not parts:
        raise ValueError(f"{where} is an empty {type(x).__name__}; it must hold at least one tensor")
    counts = [len(leaves) for leaves, _ in parts]

    def rebuild(leaves: Sequence[torch.Tensor]) -> Any:
        values, i = [], 0
        for (_, build), n in zip(parts, counts):
            values.append(build(leaves[i : i + n]))
            i += n
        if isinstance(x, Mapping):
            d = dict(zip(keys, values))
            try:
                # dict, OrderedDict, transformers' BatchEncoding; the Mapping ABC itself declares no constructor
                return type(x)(d)  # type: ignore[call-arg]
            except (TypeError, ValueError):
                return d
        if hasattr(x, "_fields"):  # namedtuple
            return type(x)(*values)
        return type(x)(values)

    return [t for leaves, _ in parts for t in leaves], rebuild


def _rows(leaves: Leaves, where: str) -> int:
    """The common first dimension of a batch's tensors (the batch size)."""
    sizes = []
    for t in leaves:
        if t.dim() == 0:
            raise ValueError(
                f"{where} holds a 0-d tensor; every tensor of a batch needs the rows first, (N, ...)"
            )
        sizes.append(t.shape[0])
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{where} holds tensors with different batch sizes {sizes} (first dimensions); every tensor of "
            f"one input is split into the same rows, so they must agree"
        )
    if sizes[0] == 0:
        raise ValueError(f"{where} is an empty batch (0 rows); pass at least one row")
    return sizes[0]


def _check_chunk_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int (rows per chunk), got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be >= 1 (rows per chunk), got {value}; 256 is a usual choice")
    return value


# ----------------------------------------------------------------------------- random state
def _cuda_devices(tensors: Iterable[torch.Tensor]) -> list[int]:
    """Indices of the CUDA devices the encoders and inputs live on (their generators are
    recorded and replayed)."""
    return sorted(
        {
            t.device.index if t.device.index is not None else torch.cuda.current_device()
            for t in tensors
            if t.device.type == "cuda"
        }
    )


def _get_rng(devices: list[int]) -> RngState:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng(state: RngState, devices: list[int]) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1]):
        torch.cuda.set_rng_state(s, d)


class _RngStates:
    """The random state before each chunk, ``(chunks, state bytes)`` per generator, in buffers
    allocated once: a small tensor kept per chunk between the chunks' freed activations
    would pin heap pages (tens of MiB at 512 chunks)."""

    def __init__(self, chunks: int, devices: list[int]) -> None:
        self.devices = devices
        first = _get_rng(devices)
        self.bufs = [s.new_empty((chunks, s.numel())) for s in (first[0], *first[1])]

    def record(self, c: int) -> None:
        cpu, cuda = _get_rng(self.devices)
        for buf, s in zip(self.bufs, (cpu, *cuda)):
            buf[c].copy_(s)

    def replay(self, c: int) -> None:
        # a tensor of its own for each: set_state refuses a row view of the buffer ("Invalid state")
        _set_rng((self.bufs[0][c].clone(), [b[c].clone() for b in self.bufs[1:]]), self.devices)


# ----------------------------------------------------------------------------- BatchNorm, DDP
def _running_stat_modules(module: nn.Module) -> list[nn.Module]:
    """Modules that update running statistics in train mode (BatchNorm*, SyncBatchNorm,
    InstanceNorm with ``track_running_stats``)."""
    return [
        m
        for m in module.modules()
        if getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None) is not None
    ]


@contextlib.contextmanager
def _running_stats_kept(modules: list[nn.Module]) -> Iterator[None]:
    """Let a forward update copies of the running statistics and keep the originals.

    The copies are swapped in rather than the originals restored in place afterwards, so
    autograd's saved tensors are never modified behind its back."""
    saved = []
    for m in modules:
        if m.training:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buf = getattr(m, name, None)
                if isinstance(buf, torch.Tensor):
                    saved.append((m, name, buf))
                    setattr(m, name, buf.clone())
    try:
        yield
    finally:
        for m, name, buf in saved:
            setattr(m, name, buf)


def _sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """``module.no_sync()`` (DDP, FSDP) unless this backward is the one that synchronises."""
    no_sync = getattr(module, "no_sync", None)
    return contextlib.nullcontext() if sync or not callable(no_sync) else no_sync()


# ----------------------------------------------------------------------------- the step
class GradCache:
    r"""Exact full-batch gradients of a contrastive loss, computed one encoder chunk at a time.

    For embeddings :math:`z = f_\theta(x)` of a batch cut into chunks :math:`x_c` of at most
    ``chunk_size`` rows (balanced: their sizes differ by at most one), :meth:`step`
    accumulates into every parameter's ``.grad``

    .. math::

        \nabla_\theta \mathcal L
            = \sum_c J_c^\top\, \frac{\partial \mathcal L}{\partial z_c},
        \qquad J_c = \frac{\partial f_\theta(x_c)}{\partial \theta},

    the gradient of the loss over the *whole* batch, while holding the activations of one
    chunk at a time: pass 1 embeds every chunk under ``torch.no_grad`` (recording the random
    state before each) but the last, whose graph it keeps; the loss and
    :math:`\partial \mathcal L / \partial z` are computed on the detached embeddings; pass 2
    back-propagates the last chunk's slice of the cached gradient through the kept graph and
    re-embeds every other chunk under its recorded random state to back-propagate its slice
    (an encoder with ``no_sync``, such as DDP, re-embeds every chunk, so that its one
    synchronising backward comes last).

    Exactness: dropout masks of the two passes match (CPU and CUDA generators replayed; the
    generators end the step as pass 1 and the loss left them); BatchNorm running statistics
    are updated by pass 1 only, once per chunk (batch statistics are per chunk, "ghost batch
    norm": see ``docs/gradcache.md``); a DDP- or FSDP-wrapped encoder (anything with
    ``no_sync``) synchronises gradients once, in the backward of its last chunk; a
    ``GradScaler`` scales the cached gradient as ``scaler.scale(loss).backward()`` would.
    Half-precision embeddings are handed to ``loss_fn`` in float32 (the library's losses
    compute in float32 anyway) and the cached gradient is cast back for the encoder.

    Args:
        encoders: one ``nn.Module`` that embeds every input, or a tuple/list of modules
            (towers): input ``i`` is embedded by ``encoders[i]`` (or as ``towers`` in
            :meth:`step` says). Each is called as ``encoder(chunk)``, with ``chunk`` of the
            same structure as the input (a tensor, dict, tuple or list of tensors); it
            returns a tensor or a dict/tuple/list of tensors with the chunk's rows first.
        chunk_size: rows per encoder call, an int or one per tower. An input with at most
            ``chunk_size`` rows is one chunk; when every input is, :meth:`step` is a plain
            step (one forward with a graph, the loss, its backward).
        scaler: a ``torch.amp.GradScaler``; the gradients left in ``.grad`` are scaled by it
            (call ``scaler.unscale_``/``step``/``update`` afterwards as usual).
        autocast: a dtype (``torch.float16``/``torch.bfloat16``) to run each encoder forward
            under ``torch.autocast`` on the encoder's device type; ``None``: the caller's
            autocast state (wrapping :meth:`step` in ``torch.autocast`` works too).

    Raises:
        TypeError: an encoder that is not an ``nn.Module``, a ``chunk_size`` that is not an
            int, a ``scaler`` without ``scale``.
        ValueError: ``chunk_size <= 0``, or a tuple of chunk sizes of another length than
            the towers.

    Examples:
        >>> import torch, contrastive
        >>> _ = torch.manual_seed(0)
        >>> enc = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 4))
        >>> x1, x2 = torch.randn(10, 8), torch.randn(10, 8)
        >>> cache = contrastive.GradCache(enc, chunk_size=4)     # chunks of 4, 3 and 3 rows
        >>> loss = cache.step(lambda z1, z2: contrastive.info_nce(z1, z2), x1, x2)
        >>> loss.requires_grad, enc[0].weight.grad.shape
        (False, torch.Size([16, 8]))

        Two towers (CLIP), each with its own chunk size:

        >>> img, txt = torch.nn.Linear(8, 4), torch.nn.Linear(6, 4)
        >>> cache = contrastive.GradCache((img, txt), chunk_size=(4, 8))
        >>> loss = cache.step(contrastive.clip_loss, torch.randn(10, 8), torch.randn(10, 6))
        >>> txt.weight.grad.shape
        torch.Size([4, 6])
    """

    def __init__(
        self,
        encoders: nn.Module | Sequence[nn.Module],
        chunk_size: int | Sequence[int] = 256,
        *,
        scaler: Any | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        towers = [encoders] if isinstance(encoders, nn.Module) else encoders
        if not isinstance(towers, (tuple, list)) or not towers:
            raise TypeError(
                f"encoders must be an nn.Module or a non-empty tuple/list of them, got "
                f"{type(encoders).__name__}"
            )
        for k, enc in enumerate(towers):
            if not isinstance(enc, nn.Module):
                raise TypeError(
                    f"encoders[{k}] must be an nn.Module, got {type(enc).__name__}; wrap a function "
                    f"in a small nn.Module so its parameters, train mode and DDP wrapper are visible"
                )
        self.encoders: list[nn.Module] = list(towers)
        if isinstance(chunk_size, (tuple, list)):
            if len(chunk_size) != len(self.encoders):
                raise ValueError(
                    f"chunk_size has {len(chunk_size)} entries for {len(self.encoders)} encoder(s); "
                    f"pass one int, or one per encoder"
                )
            self.chunk_sizes = [_check_chunk_size(c, f"chunk_size[{k}]") for k, c in enumerate(chunk_size)]
        else:
            self.chunk_sizes = [_check_chunk_size(chunk_size, "chunk_size")] * len(self.encoders)
        if scaler is not None and not callable(getattr(scaler, "scale", None)):
            raise TypeError(f"scaler must be a torch.amp.GradScaler (or None), got {type(scaler).__name__}")
        if autocast is not None and not isinstance(autocast, torch.dtype):
            raise TypeError(
                f"autocast must be a torch.dtype such as torch.bfloat16 (or None), got {autocast!r}"
            )
        self.scaler = scaler
        self.autocast = autocast

    def __repr__(self) -> str:
        names = ", ".join(type(e).__name__ for e in self.encoders)
        sizes = self.chunk_sizes if len(self.chunk_sizes) > 1 else self.chunk_sizes[0]
        return f"GradCache(({names}), chunk_size={sizes})"

    # ------------------------------------------------------------------------- helpers
    def _towers(self, n_inputs: int, towers: Sequence[int] | None) -> list[int]:
        if towers is None:
            if len(self.encoders) == 1:
                return [0] * n_inputs
            if n_inputs != len(self.encoders):
                raise ValueError(
                    f"GradCache has {len(self.encoders)} encoders and step got {n_inputs} inputs; pass one input per "
                    f"encoder, or towers=(...) naming the encoder of each input (e.g. towers=(0, 1, 1))"
                )
            return list(range(n_inputs))
        towers = list(towers)
        if len(towers) != n_inputs or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(self.encoders) for t in towers
        ):
            raise ValueError(
                f"towers must give, for each of the {n_inputs} inputs, an encoder index in "
                f"0..{len(self.encoders) - 1}; got {towers}"
            )
        return towers

    def _forward(self, encoder: nn.Module, chunk: Any) -> Any:
        if self.autocast is None:
            return encoder(chunk)
        param = next(encoder.parameters(), None)
        device_type = param.device.type if param is not None else "cpu"
        with torch.autocast(device_type, dtype=self.autocast):
            return encoder(chunk)

    @staticmethod
    def _outputs(out: Any, rows: int, k: int) -> tuple[Leaves, Rebuild]:
        leaves, rebuild = _flatten(out, f"the output of encoder {k}")
        for t in leaves:
            if t.dim() == 0 or t.shape[0] != rows:
                raise ValueError(
                    f"encoder {k} returned a tensor of shape {tuple(t.shape)} for a chunk of {rows} rows; every "
                    f"output must have the chunk's rows first, e.g. embeddings (rows, d). Pass other values (a "
                    f"learnable temperature) to the loss through a closure"
                )
        return leaves, rebuild

    @staticmethod
    def _check_loss(loss: Any) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(
                f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}; reduce it (reduction='mean' "
                f"or 'sum', or .mean()) so that its gradient with respect to the embeddings is defined"
            )
        if not loss.requires_grad:
            raise ValueError(
                "loss_fn's result does not require grad: it must be computed from the embeddings it is given "
                "(no .detach(), no torch.no_grad() inside it)"
            )
        return loss.reshape(())

    def _backward_loss(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    # ------------------------------------------------------------------------- public
    def step(
        self, loss_fn: Callable[..., torch.Tensor], *inputs: Any, towers: Sequence[int] | None = None
    ) -> torch.Tensor:
        r"""Accumulate the full-batch gradient of ``loss_fn(f(inputs[0]), f(inputs[1]), ...)``.

        Every input of ``N`` rows is split along its first dimension into
        ``ceil(N / chunk_size)`` chunks (its tower's chunk size) whose sizes differ by at
        most one, so no chunk is a tiny remainder (BatchNorm cannot train on one row, and
        its per-chunk statistics stay alike); the embeddings of all chunks are
        concatenated back, so ``loss_fn`` sees the whole batch, exactly as if each encoder
        had embedded its input in one call (up to BatchNorm's per-chunk batch statistics).
        The loss's own parameters (a learnable temperature captured by ``loss_fn``) get
        their gradient too. Call it where ``loss.backward()`` would go: gradients
        accumulate into ``.grad`` (zero them before, step the optimiser after).

        Under ``torch.distributed``, ``loss_fn`` may be a global-batch loss of
        :mod:`contrastive.distributed` (every rank calls :meth:`step` with the same number
        of inputs); a DDP encoder is synchronised once per step.

        Args:
            loss_fn: maps the embeddings of each input, in order, to a scalar loss (any loss
                of this library, or your own function of them).
            *inputs: one batch per encoder call: tensors, or dicts/tuples/lists of tensors
                (tokenised text) with the same number of rows.
            towers: for each input, the index of the encoder that embeds it (default: the
                one encoder for every input, or input ``i`` -> encoder ``i``).

        Shape:
            each input: ``(N_i, ...)``; each embedding ``loss_fn`` receives: ``(N_i, ...)``.

        Returns:
            The loss, detached (not scaled by ``scaler``).

        Raises:
            TypeError: ``loss_fn`` not callable or returning a non-tensor, an input that is
                not a tensor/dict/tuple/list of tensors.
            ValueError: no inputs, tensors of one input with different batch sizes, an empty
                batch, inputs and encoders that do not match, encoder outputs without the
                chunk's rows first, a loss that is not a scalar or does not require grad.
            RuntimeError: called under ``torch.no_grad()``.
        """
        flat, rows, sizes, towers = self._prepare("step", loss_fn, inputs, towers)
        if all(n <= c for n, c in zip(rows, sizes)):
            return self._plain_step(loss_fn, inputs, rows, towers)
        value, finish = self._cached_step(loss_fn, flat, rows, sizes, towers)
        finish(None)
        return value

    def loss(
        self, loss_fn: Callable[..., torch.Tensor], *inputs: Any, towers: Sequence[int] | None = None
    ) -> torch.Tensor:
        r"""The deferred form of :meth:`step`: pass 1 and the loss now, pass 2 in ``backward``.

        Returns the loss as a tensor whose ``backward()`` (or ``torch.autograd.backward``
        with a ``grad_output`` g, e.g. a trainer's loss scaling or gradient-accumulation
        division) accumulates ``g * dL/dtheta`` into every parameter's ``.grad``, re-embedding
        the chunks then: the calling convention of a training loop that does
        ``loss = loss_fn(batch); loss.backward()`` (sentence-transformers' trainer, for
        one). The loss's own parameters (a learnable temperature) get ``g * dL/dp`` too.
        ``scaler`` is not applied here (the outer backward's ``grad_output`` carries any
        scale). Back-propagate the result once; the random state left after the backward is
        the one before it. With every input within ``chunk_size`` rows it is the plain loss
        with its graph.

        Its arguments, shapes and errors are those of :meth:`step`.

        Returns:
            The scalar loss; it requires grad.

        Examples:
            >>> import torch, contrastive
            >>> enc = torch.nn.Linear(8, 4)
            >>> cache = contrastive.GradCache(enc, chunk_size=4)
            >>> x1, x2 = torch.randn(10, 8), torch.randn(10, 8)
            >>> loss = cache.loss(lambda z1, z2: contrastive.info_nce(z1, z2), x1, x2)
            >>> enc.weight.grad is None          # pass 2 has not run yet
            True
            >>> (0.5 * loss).backward()          # runs it, scaled by 0.5
            >>> enc.weight.grad.shape
            torch.Size([4, 8])
        """
        flat, rows, sizes, towers = self._prepare("loss", loss_fn, inputs, towers)
        if all(n <= c for n, c in zip(rows, sizes)):
            embeddings = []
            for x, n, t in zip(inputs, rows, towers):
                leaves, rebuild = self._outputs(self._forward(self.encoders[t], x), n, t)
                embeddings.append(rebuild([_upcast(z) for z in leaves]))
            return self._check_loss(loss_fn(*embeddings))
        value, finish = self._cached_step(loss_fn, flat, rows, sizes, towers, deferred=True)
        return _Deferred.apply(value, torch.empty(0, requires_grad=True), finish)

    def _prepare(
        self, name: str, loss_fn: Any, inputs: Sequence[Any], towers: Sequence[int] | None
    ) -> tuple[list[tuple[Leaves, Rebuild]], list[int], list[int], list[int]]:
        """Validate a call of :meth:`step` / :meth:`loss`: the flattened inputs, their row
        counts, each one's chunk size and tower."""
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable (embeddings -> scalar loss), got {type(loss_fn).__name__}"
            )
        if not inputs:
            raise ValueError(f"{name} needs at least one input batch: {name}(loss_fn, x1, x2, ...)")
        if not torch.is_grad_enabled():
            raise RuntimeError(f"GradCache.{name} computes gradients; call it outside torch.no_grad()")
        towers = self._towers(len(inputs), towers)
        flat = [_flatten(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
        rows = [_rows(leaves, f"inputs[{i}]") for i, (leaves, _) in enumerate(flat)]
        sizes = [self.chunk_sizes[t] for t in towers]
        if any(n > c for n, c in zip(rows, sizes)):
            self._check_batchnorm_chunks(rows, sizes, towers)
        return flat, rows, sizes, towers

    def _check_batchnorm_chunks(
        self, rows: Sequence[int], sizes: Sequence[int], towers: Sequence[int]
    ) -> None:
        """A chunk of one row through BatchNorm in train mode has no batch statistics: refuse
        before any work, naming the chunk size that avoids it."""
        for i, (n, cs, t) in enumerate(zip(rows, sizes, towers)):
            smallest = n // -(-n // cs)  # the balanced split's smallest chunk
            bn = [m for m in self.encoders[t].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if n > cs and smallest < 2 and any(m.training for m in bn):
                raise ValueError(
                    f"inputs[{i}] ({n} rows, chunk_size={cs}) is cut into chunks as small as 1 row, and encoder "
                    f"{t} has BatchNorm in train mode, which cannot normalise a single row; use chunk_size >= 2 "
                    f"with no 1-row chunk (e.g. chunk_size={max(2, -(-n // max(1, n // 2)))}), or put the "
                    f"BatchNorm layers in eval mode"
                )

    def _plain_step(
        self,
        loss_fn: Callable[..., torch.Tensor],
        inputs: Sequence[Any],
        rows: Sequence[int],
        towers: Sequence[int],
    ) -> torch.Tensor:
        """Every input fits in one chunk: one forward with a graph, the loss, its backward.

        An encoder that embeds several inputs runs all but its last forward under
        ``no_sync``: the one backward then synchronises once, and DDP broadcasts buffers
        once per step, as in the cached path."""
        last = {id(self.encoders[t]): i for i, t in enumerate(towers)}
        embeddings = []
        for i, (x, n, t) in enumerate(zip(inputs, rows, towers)):
            with _sync(self.encoders[t], last[id(self.encoders[t])] == i):
                leaves, rebuild = self._outputs(self._forward(self.encoders[t], x), n, t)
            embeddings.append(rebuild([_upcast(z) for z in leaves]))
        loss = self._check_loss(loss_fn(*embeddings))
        self._backward_loss(loss)
        return loss.detach()

    def _cached_step(
        self,
        loss_fn: Callable[..., torch.Tensor],
        flat: Sequence[tuple[Leaves, Rebuild]],
        rows: Sequence[int],
        sizes: Sequence[int],
        towers: Sequence[int],
        deferred: bool = False,
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor | None], None]]:
        """Pass 1 and the loss; returns the loss value and ``finish(g)``, which back-propagates
        the loss (times ``g`` when given; through ``scaler`` when not deferred) into the
        embeddings and runs pass 2."""
        encoders = self.encoders
        devices = _cuda_devices(
            [p for e in encoders for p in e.parameters()] + [t for leaves, _ in flat for t in leaves]
        )
        # pass 1: embed every chunk without a graph, recording the random state before each;
        # the very last chunk keeps its graph (pass 2 need not embed it again) unless its
        # encoder synchronises gradients (DDP), whose backward must come last and in no_sync order
        ik = len(flat) - 1
        enc_k = encoders[towers[ik]]
        keep_last = not callable(getattr(enc_k, "no_sync", None)) and _trainable(enc_k, flat[ik][0])
        kept: Leaves = []  # the last chunk's outputs, with their graph
        chunks: list[list[Any]] = []  # chunks[i][c]: the chunk structure
        starts: list[list[int]] = []  # starts[i][c]: the chunk's first row
        states: list[_RngStates] = []
        embeddings, leaves_all = [], []
        # the chunks are views cut with autograd on, so that pass 2 reaches inputs that require grad
        all_pieces = [
            [t_.tensor_split(-(-n // cs)) for t_ in leaves]  # balanced: sizes differ by <= 1
            for (leaves, _), n, cs in zip(flat, rows, sizes)
        ]
        with torch.no_grad():
            for i, ((_, rebuild), n, t) in enumerate(zip(flat, rows, towers)):
                pieces = all_pieces[i]
                chunks.append([rebuild([p[c] for p in pieces]) for c in range(len(pieces[0]))])
                states.append(_RngStates(len(chunks[i]), devices))
                starts.append([])
                full: Leaves = []
                out_rebuild: Rebuild | None = None
                start = 0
                for c, chunk in enumerate(chunks[i]):
                    states[i].record(c)
                    starts[i].append(start)
                    m = pieces[0][c].shape[0]
                    grad = keep_last and i == ik and c == len(chunks[i]) - 1
                    with torch.set_grad_enabled(grad):
                        out, out_rebuild = self._outputs(self._forward(encoders[t], chunk), m, t)
                    if grad:
                        kept = out
                    if c == 0:  # written in place: one copy of the embeddings, float32 for half ones
                        full = [
                            torch.empty((n, *z.shape[1:]), dtype=_upcast_dtype(z.dtype), device=z.device)
                            for z in out
                        ]  # (N_i, ...)
                    if len(out) != len(full) or any(z.shape[1:] != f.shape[1:] for z, f in zip(out, full)):
                        raise ValueError(
                            f"encoder {t} returned outputs of different structures or shapes for "
                            f"two chunks of inputs[{i}]; it must return the same for every chunk"
                        )
                    for f, z in zip(full, out):
                        f[start : start + m] = z.detach()
                    start += m
                full = [z.requires_grad_() if z.is_floating_point() else z for z in full]
                leaves_all.append(full)
                assert out_rebuild is not None  # n >= 1 rows: at least one chunk
                embeddings.append(out_rebuild(full))
        # the loss on the whole batch (its gradient with respect to the embeddings: in finish)
        held = [self._check_loss(loss_fn(*embeddings))]  # emptied by finish
        after_loss = _get_rng(devices)
        value = held[0].detach()
        del embeddings, full

        def finish(g: torch.Tensor | None) -> None:
            nonlocal kept
            restore = _get_rng(devices) if deferred else after_loss
            loss = held.pop()
            if deferred:
                torch.autograd.backward(loss, g)
            else:
                self._backward_loss(loss)
            grads = [[z.grad if z.requires_grad else None for z in full] for full in leaves_all]
            del loss  # pass 2 needs the gradients, not the embeddings or the loss's graph
            leaves_all.clear()
            # the kept last chunk: back-propagate through the graph of pass 1, then free it
            if kept:
                s = slice(starts[ik][-1], starts[ik][-1] + kept[0].shape[0])
                _backward_chunk(kept, grads[ik], s)
                kept = []
            # pass 2: re-embed each chunk under its random state and back-propagate its cached gradient
            jobs = [
                (i, c)
                for i in range(len(flat))
                if any(g is not None for g in grads[i]) and _trainable(encoders[towers[i]], flat[i][0])
                for c in range(len(chunks[i]))
                if not (keep_last and i == ik and c == len(chunks[i]) - 1)
            ]
            last = {id(encoders[towers[i]]): j for j, (i, _) in enumerate(jobs)}
            bn = {id(e): _running_stat_modules(e) for e in encoders}
            try:
                for j, (i, c) in enumerate(jobs):
                    enc = encoders[towers[i]]
                    chunk = chunks[i][c]
                    with _sync(enc, last[id(enc)] == j), _running_stats_kept(bn[id(enc)]):
                        states[i].replay(c)
                        n = _rows(_flatten(chunk, "chunk")[0], "chunk")
                        out, _ = self._outputs(self._forward(enc, chunk), n, towers[i])
                        _backward_chunk(out, grads[i], slice(starts[i][c], starts[i][c] + n))
            finally:
                _set_rng(restore, devices)

        return value, finish


class _Deferred(torch.autograd.Function):
    """The loss value of :meth:`GradCache.loss`; its backward runs ``finish(grad_output)``
    (the loss's backward and pass 2). ``anchor`` is an empty leaf that makes the output
    require grad."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, anchor: torch.Tensor, finish: Any) -> torch.Tensor:
        ctx.finish = finish
        return value.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, None, None]:
        finish, ctx.finish = ctx.finish, None
        if finish is None:
            raise RuntimeError("the loss of GradCache.loss was back-propagated twice; back-propagate it once")
        with torch.enable_grad():  # autograd runs backward without grad mode; pass 2 needs graphs
            finish(g)
        return None, None, None


def _backward_chunk(out: Leaves, grads: Sequence[torch.Tensor | None], rows: slice) -> None:
    """Back-propagate a chunk's rows of the cached gradient through its outputs:
    ``+= J_c^T dL/dz_c`` in every parameter's ``.grad``."""
    pairs = [(o, g[rows].to(o.dtype)) for o, g in zip(out, grads) if g is not None and o.requires_grad]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


def _upcast_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _upcast(z: torch.Tensor) -> torch.Tensor:
    """Half-precision embeddings -> float32 for the loss (differentiable; a no-op otherwise)."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _trainable(encoder: nn.Module, input_leaves: Leaves) -> bool:
    """Whether back-propagating through ``encoder`` can reach anything that wants a gradient."""
    return any(p.requires_grad for p in encoder.parameters()) or any(t.requires_grad for t in input_leaves)
