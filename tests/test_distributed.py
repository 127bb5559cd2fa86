"""contrastive.distributed on real gloo process groups spawned on localhost: the tests of
distributed.py, _dist_common.py, ops/dist_objectives.py (info_nce, clip_loss) and ops/collectives.py across ranks of
unequal batch sizes.

Each spawned job runs a whole battery of checks on every rank (spawning costs seconds, the
checks milliseconds) and reports its errors to the parent, which asserts. The reference for
every check is the single-process computation over the concatenated global batch, in
float64, to 1e-10: loss values, input gradients ('exact' mode and 'ddp' = world_size x
exact), the temperature gradient, and parameter gradients of a DDP-wrapped encoder.
"""

from __future__ import annotations

import datetime
import os
import queue
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import contrastive as C
import contrastive.distributed as cd

TOL = 1e-10


# ----------------------------------------------------------------------------- harness
def _worker(rank, world, port, case, pg_timeout, q):
    torch.set_num_threads(1)
    try:
        store = dist.TCPStore(
            "127.0.0.1", port, world, is_master=False, timeout=datetime.timedelta(seconds=60)
        )
        dist.init_process_group(
            "gloo", store=store, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=pg_timeout)
        )
        t0 = time.monotonic()
        result = (case if callable(case) else CASES[case])(rank, world)  # or another test module's function
        q.put((rank, "ok", result, time.monotonic() - t0))
    except BaseException as e:  # report, then die as a crash would
        q.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}", 0.0))
        q.close()
        q.join_thread()  # flush before dying
        os._exit(1)
    dist.destroy_process_group()


def spawn(world, case, pg_timeout=60, deadline=180, wait_for=None):
    """Run CASES[case] (or `case` itself, a module-level function of a test module) on `world`
    gloo ranks until the ranks in `wait_for` (default: all) report or the deadline passes;
    {rank: (status, payload, seconds)}."""
    wait_for = set(range(world) if wait_for is None else wait_for)
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, world, store.port, case, pg_timeout, q), daemon=True)
        for r in range(world)
    ]
    for p in procs:
        p.start()
    out, end = {}, time.monotonic() + deadline
    try:
        while not wait_for <= set(out) and time.monotonic() < end:
            try:
                rank, status, payload, secs = q.get(timeout=1.0)
                out[rank] = (status, payload, secs)
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and q.empty():
                    break
    finally:
        for r, p in enumerate(procs):  # only the processes started here
            if r in wait_for:
                p.join(timeout=max(0.0, min(5.0, end - time.monotonic())))
            if p.is_alive():
                p.terminate()
                p.join(5)
    return out


def check_all_ok(out, world):
    assert sorted(out) == list(range(world)), f"ranks that never reported: {set(range(world)) - set(out)}"
    for rank, (status, payload, _) in out.items():
        assert status == "ok", f"rank {rank} failed:\n{payload}"
    for rank, (_, errors, _) in out.items():
        bad = {k: v for k, v in errors.items() if not v <= TOL}
        assert not bad, f"rank {rank}: errors above {TOL}: {bad}"


# ----------------------------------------------------------------------------- checks run on each rank
def _slices(sizes):
    offs = [sum(sizes[:r]) for r in range(len(sizes))]
    return [slice(o, o + n) for o, n in zip(offs, sizes)]


def _err(a, b):
    """max |a - b| relative to max(1, |b|): one number per comparison."""
    if a is None or b is None:
        return float("inf") if (a is None) != (b is None) else 0.0
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max()))) if b.numel() else 0.0


def _pair_case(errors, fn, ref_fn, rank, world, sizes, d, tau, reduction, seed, gradient="exact", **kw):
    """One distributed call against the single-process one on the concatenated batch."""
    g = torch.Generator().manual_seed(seed)
    B = sum(sizes)
    X1 = torch.randn(B, d, generator=g, dtype=torch.float64)
    X2 = X1 + 0.5 * torch.randn(B, d, generator=g, dtype=torch.float64)
    W = torch.rand(2 * B if fn is cd.info_nce else B, generator=g, dtype=torch.float64) + 0.5
    s = _slices(sizes)[rank]
    # single process, whole batch
    r1, r2 = X1.clone().requires_grad_(), X2.clone().requires_grad_()
    rt = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    ref = ref_fn(r1, r2, rt, reduction=reduction, **kw)
    (ref * W).sum().backward() if reduction == "none" else (2 * ref).backward()
    # this rank's share
    z1, z2 = X1[s].clone().requires_grad_(), X2[s].clone().requires_grad_()
    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    out = fn(z1, z2, t, reduction=reduction, gradient=gradient, **kw)
    name = f"{fn.__name__}/{reduction}/{sizes}/tau={tau}/{kw}/{gradient}"
    scale = world if gradient == "ddp" else 1
    if reduction == "none":
        n = z1.shape[0]
        if fn is cd.info_nce:
            ref_loc, w_loc = torch.cat([ref[s], ref[B:][s]]), torch.cat([W[s], W[B:][s]])
        else:
            ref_loc, w_loc = ref[s], W[s]
        errors[name + "/loss"] = _err(out, ref_loc)
        (out * w_loc).sum().backward()
        assert out.shape == (2 * n if fn is cd.info_nce else n,)
    else:
        errors[name + "/loss"] = _err(out, ref)
        (2 * out).backward()
    errors[name + "/grad1"] = _err(z1.grad, scale * r1.grad[s])
    errors[name + "/grad2"] = _err(z2.grad, scale * r2.grad[s])
    errors[name + "/grad_temperature"] = _err(t.grad, rt.grad)


def _gather_case(errors, rank, world):
    sizes = [2 + (3 * r) % 4 for r in range(world)]  # uneven: 2, 5, 4, ...
    g = torch.Generator().manual_seed(7)
    X = torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64)
    Ws = [torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64) for _ in range(world)]
    s = _slices(sizes)[rank]
    x = X[s].clone().requires_grad_()
    y = cd.all_gather_with_grad(x)
    errors["gather/forward"] = _err(y, X)
    (y * Ws[rank]).sum().backward()  # a different loss on each rank
    errors["gather/backward"] = _err(x.grad, sum(Ws)[s])  # sum over ranks' losses


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 5, dtype=torch.float64)
        self.tau = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x1, x2):
        return self.lin(x1), self.lin(x2), self.tau


def _ddp_case(errors, rank, world, sizes):
    """After DDP averages gradients, each parameter's .grad is the full-batch gradient."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    ref_model = _Encoder()
    model = DDP(_Encoder())
    model.module.load_state_dict(ref_model.state_dict())
    g = torch.Generator().manual_seed(11)
    B = sum(sizes)
    X1, X2 = (
        torch.randn(B, 6, generator=g, dtype=torch.float64),
        torch.randn(B, 6, generator=g, dtype=torch.float64),
    )
    s = _slices(sizes)[rank]

    def per_row_mean(*args):  # 'none': collectives in backward
        return cd.info_nce(*args, reduction="none").sum() / (2 * B)

    for loss_name, dist_fn, ref_fn in [
        ("info_nce", cd.info_nce, C.info_nce),
        ("clip_loss", cd.clip_loss, C.clip_loss),
        ("info_nce_none", per_row_mean, C.info_nce),
    ]:
        ref_model.zero_grad()
        model.zero_grad()
        ref_fn(*ref_model(X1, X2)).backward()
        dist_fn(*model(X1[s], X2[s])).backward()  # gradient='ddp', the default
        for (name, p), q in zip(model.module.named_parameters(), ref_model.parameters()):
            errors[f"ddp/{loss_name}/{sizes}/{name}"] = _err(p.grad, q.grad)


def _exactness(rank, world):
    errors = {}
    size_sets = {2: [[3, 5], [4, 4]], 3: [[2, 3, 4], [3, 0, 2]]}[world]
    for k, sizes in enumerate(size_sets):
        for exclude_self in (True, False):
            for reduction in ("mean", "sum", "none"):
                _pair_case(
                    errors,
                    cd.info_nce,
                    C.info_nce,
                    rank,
                    world,
                    sizes,
                    5,
                    0.3,
                    reduction,
                    seed=k,
                    exclude_self=exclude_self,
                    block_size=3,
                )
        for reduction in ("mean", "none"):
            _pair_case(
                errors, cd.clip_loss, C.clip_loss, rank, world, sizes, 5, 0.3, reduction, seed=k, block_size=3
            )
        _pair_case(
            errors, cd.info_nce, C.info_nce, rank, world, sizes, 4, 0.5, "mean", seed=k, gradient="ddp"
        )
        _pair_case(
            errors, cd.info_nce, C.info_nce, rank, world, sizes, 4, 0.5, "none", seed=k, gradient="ddp"
        )
        _pair_case(
            errors, cd.clip_loss, C.clip_loss, rank, world, sizes, 4, 0.07, "sum", seed=k, gradient="ddp"
        )
        # online-max path (exp(-2/tau) underflows float64) and unnormalised rows
        _pair_case(
            errors, cd.info_nce, C.info_nce, rank, world, sizes, 4, 0.002, "mean", seed=k, block_size=2
        )
        _pair_case(
            errors, cd.clip_loss, C.clip_loss, rank, world, sizes, 4, 0.002, "none", seed=k, block_size=2
        )
        _pair_case(
            errors, cd.info_nce, C.info_nce, rank, world, sizes, 4, 2.0, "mean", seed=k, normalize=False
        )
    _gather_case(errors, rank, world)
    _ddp_case(errors, rank, world, size_sets[0])
    return errors


def _low_precision_and_bad_input(rank, world):
    """float32 to 1e-5; float16 / bfloat16 accumulate in float32 as in one process; bad input on one
    rank raises on every rank (no hang); settings that differ across ranks are rejected."""
    errors, sizes = {}, [3, 5]
    g = torch.Generator().manual_seed(3)
    X1, X2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    s = _slices(sizes)[rank]
    for dt, ulp in [(torch.float32, 1e-5), (torch.float16, 2**-10), (torch.bfloat16, 2**-7)]:
        a, b = X1.to(dt), X2.to(dt)
        ref = C.info_nce(a, b, 0.1).float()
        out = cd.info_nce(a[s], b[s], 0.1)
        assert out.dtype == dt
        errors[f"{dt}/loss"] = max(0.0, _err(out.float(), ref) - ulp)  # float32: 1e-5; half: one rounding
        za = a[s].clone().requires_grad_()
        cd.info_nce(za, b[s], 0.1, gradient="exact").backward()
        ra = a.clone().requires_grad_()
        C.info_nce(ra, b, 0.1).backward()
        errors[f"{dt}/grad"] = max(0.0, _err(za.grad.float(), ra.grad[s].float()) - ulp)
    # NaN on rank 1 only
    z = X1[s].clone()
    if rank == 1:
        z[0, 0] = float("nan")
    try:
        cd.info_nce(z, X2[s])
        errors["nan: no error raised"] = float("inf")
    except ValueError as e:
        errors["nan: rank 1 names the input"] = (
            0.0 if (rank == 1 and "z1 contains NaN" in str(e)) else float("inf")
        )
    except cd.DistributedError as e:
        errors["nan: others name rank 1"] = (
            0.0 if (rank != 1 and "rank(s) [1] rejected" in str(e)) else float("inf")
        )
    # a temperature that differs across ranks
    try:
        cd.clip_loss(X1[s], X2[s], temperature=0.1 + rank)
        errors["temperature mismatch: no error"] = float("inf")
    except ValueError as e:
        errors["temperature mismatch"] = 0.0 if "temperature differs across ranks" in str(e) else float("inf")
    # the group still works afterwards
    errors["after errors"] = _err(
        cd.info_nce(X1[s].double(), X2[s].double()), C.info_nce(X1.double(), X2.double())
    )
    return errors


def _rank1_crashes(rank, world):
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose before the loss")
    return {"elapsed": cd.info_nce(torch.randn(4, 3), torch.randn(4, 3)).item()}


def _rank1_stalls(rank, world):
    if rank == 1:
        time.sleep(60)  # alive but never calls the loss
    return {"elapsed": cd.info_nce(torch.randn(4, 3), torch.randn(4, 3)).item()}


CASES = {
    "exactness": _exactness,
    "low_precision_and_bad_input": _low_precision_and_bad_input,
    "crash": _rank1_crashes,
    "stall": _rank1_stalls,
}


# ----------------------------------------------------------------------------- tests
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


@pytest.mark.parametrize("world", [2, 3])
def test_loss_and_gradients_equal_single_process(world):
    """Loss, input and temperature gradients (exact and DDP-scaled), both exclude_self
    variants, clip_loss, uneven and empty per-rank batches, both shift paths, the gather, and
    the parameter gradients of a DDP-wrapped encoder: all equal to one process, float64."""
    check_all_ok(spawn(world, "exactness"), world)


def test_half_precision_and_bad_input_on_one_rank():
    check_all_ok(spawn(2, "low_precision_and_bad_input"), 2)


@pytest.mark.parametrize("case, pg_timeout", [("crash", 20), ("stall", 3)])
def test_failing_rank_stops_the_others_with_a_clear_error(case, pg_timeout):
    """A rank that dies (connection closed) or stalls (process-group timeout) makes rank 0
    raise DistributedError naming the collective, within bounded time, instead of hanging."""
    t0 = time.monotonic()
    out = spawn(2, case, pg_timeout=pg_timeout, deadline=60, wait_for=[0, 1] if case == "crash" else [0])
    assert 0 in out, "rank 0 never reported: it hung"
    status, payload, _ = out[0]
    assert status == "error" and payload.startswith("DistributedError"), payload
    assert "contrastive.distributed.info_nce" in payload and "Another rank" in payload, payload
    assert time.monotonic() - t0 < 45
    if case == "crash":
        assert out[1][0] == "error" and "fails on purpose" in out[1][1]


# ----------------------------------------------------------------------------- single process
def test_single_process_fallback_equals_functional():
    assert not dist.is_initialized()
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    for exclude_self in (True, False):
        for reduction in ("mean", "none"):
            a = cd.info_nce(z1, z2, 0.2, exclude_self=exclude_self, reduction=reduction)
            b = C.info_nce(z1, z2, 0.2, exclude_self=exclude_self, reduction=reduction)
            assert torch.equal(a, b)
    assert torch.equal(cd.clip_loss(z1, z2), C.clip_loss(z1, z2))
    assert cd.all_gather_with_grad(z1) is z1


def test_single_process_argument_errors():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="gradient must be 'ddp'"):
        cd.info_nce(z, z, gradient="mean")
    with pytest.raises(RuntimeError, match="not initialised"):
        cd.info_nce(z, z, process_group=object())


def test_all_gather_with_grad_takes_process_group():
    z = torch.randn(3, 2)
    assert cd.all_gather_with_grad(z, process_group=None) is z
    assert cd.all_gather_with_grad(z) is z
    with pytest.raises(TypeError, match="'group'"):
        cd.all_gather_with_grad(z, group=None)
