"""Benchmark the objectives of issue 11 on the CPU: supervised contrastive, retrieval with hard
negatives, SigLIP and decoupled InfoNCE, forward + backward, float32.

Providers per objective (``N`` rows of the similarity matrix's larger side):
  supcon     contrastive (supcon_loss), naive (dense autograd), pml (pytorch-metric-learning's
             SupConLoss), and nt_xent: contrastive.nt_xent at the same N, d and temperature,
             for the "supcon within 1.15x of info_nce" target. Labels: 1024 classes, row i has
             class i mod 1024 (16 positives per row at N = 16384).
  retrieval  contrastive (retrieval_loss), naive: B = N / 2 anchors, their B positives and
             K = 1 hard negative each (B (1 + K) = N candidates per anchor).
  siglip     contrastive (siglip_loss), naive, open_clip (open_clip's SigLipLoss, its loss.py
             loaded on its own from the file, features L2-normalised first): B = N pairs.
  dcl        contrastive (info_nce(decoupled=True)), naive: B = N / 2 pairs, N rows.
  Issue 25's features, on the retrieval setup (B = N / 2, K = 1), each against its dense form
  and against the plain ``retrieval`` rows of the same run (the targets: hardness and hcl
  <= 1.3x, gist <= 1.6x, gte4 <= 2.5x the plain loss's time):
  hardness   retrieval_loss(hardness_mode="all_negatives", hardness_strength=1.0)
  hcl        retrieval_loss(hcl_beta=1.0, hcl_tau_plus=0.1)
  gist       retrieval_loss(guide=...) with guide embeddings as wide as the model's, margin 0.05
  gte4       retrieval_loss(directions=all four, partition_mode="joint")
  matryoshka retrieval's setup at d = 768 with matryoshka_dims (768, 512, 256, 128, 64) (the
             same fractions of d at other widths): contrastive (one retrieval_loss call with
             the dims, every prefix in one walk), full (one plain full-width retrieval_loss call),
             separate (five retrieval_loss calls, one per prefix, summed: what
             sentence-transformers' MatryoshkaLoss does), naive (dense autograd, summed over the
             prefixes). Targets (issue 25): contrastive <= 1.25x full, >= 1.7x faster than separate.

Each configuration runs in a fresh process (address space capped with RLIMIT_AS), the
median of several fwd+bwd calls after a warm-up, peak RSS of that process (torch itself is
~230 MiB of it). ``--with-info-nce`` also re-runs bench_info_nce.py's N = 16384 rows (NT-Xent
and CLIP) in the same session, to compare with the README's figures. Output: CSV and PNG in
benchmarks/results/, a Markdown table on stdout.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_objectives.py --with-info-nce
    python benchmarks/bench_objectives.py --quick          # small N, a smoke run
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_info_nce as base  # (the worker's timing loop, the subprocess runner)

RESULTS = base.RESULTS
TAU = {"supcon": 0.1, "retrieval": 0.05, "siglip": 0.1, "dcl": 0.1, "matryoshka": 0.05}
FEATURES = ("hardness", "hcl", "gist", "gte4")  # issue 25, on the retrieval setup
TAU.update({f: 0.05 for f in FEATURES})
ALL4 = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
MRL_FRACTIONS = (12, 8, 4, 2, 1)  # twelfths of d: (768, 512, 256, 128, 64) at d = 768
MRL_D = 768
BIAS = -10.0
CLASSES = 1024
K = 1


# ---------------------------------------------------------------- worker side


def _open_clip_siglip():
    """open_clip's SigLipLoss from its loss.py alone (the package needs torchvision to import)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip_torch is not installed (pip install --no-deps open_clip_torch)")
    path = Path(next(iter(spec.submodule_search_locations))) / "loss.py"
    mod_spec = importlib.util.spec_from_file_location("_open_clip_loss", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.SigLipLoss()


def _make(objective: str, provider: str, N: int, d: int):
    """(loss function of the float inputs, the inputs)."""
    import torch
    import torch.nn.functional as F

    import contrastive as C

    tau = TAU[objective]
    if objective == "supcon":
        z = torch.randn(N, d)
        labels = torch.arange(N) % CLASSES
        if provider == "contrastive":
            return (lambda z: C.supcon_loss(z, labels, tau)), [z]
        if provider == "nt_xent":
            return (lambda z: C.nt_xent(z, tau)), [z]
        if provider == "pml":
            from pytorch_metric_learning.losses import SupConLoss

            crit = SupConLoss(temperature=tau)
            return (lambda z: crit(z, labels)), [z]
        if provider == "naive":

            def naive_supcon(z):
                z = F.normalize(z, dim=1)
                eye = torch.eye(N, dtype=torch.bool)
                S = (z @ z.T / tau).masked_fill(eye, float("-inf"))
                logp = S - torch.logsumexp(S, 1, keepdim=True)
                pos = (labels[:, None] == labels[None, :]) & ~eye
                n_pos = pos.sum(1)
                per_row = -logp.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
                return per_row[n_pos > 0].mean()

            return naive_supcon, [z]
    if objective == "retrieval":
        B = N // (1 + K)
        inputs = [torch.randn(B, d), torch.randn(B, d), torch.randn(B, K, d)]
        if provider == "contrastive":
            return (lambda a, p, n: C.retrieval_loss(a, p, n, tau)), inputs
        if provider == "naive":

            def naive_retrieval(a, p, n):
                a = F.normalize(a, dim=1)
                cand = F.normalize(torch.cat([p, n.reshape(-1, d)]), dim=1)  # (B (1 + K), d)
                return F.cross_entropy(a @ cand.T / tau, torch.arange(B))

            return naive_retrieval, inputs
    if objective == "siglip":
        inputs = [torch.randn(N, d), torch.randn(N, d)]
        if provider == "contrastive":
            return (lambda a, b: C.siglip_loss(a, b, tau, BIAS)), inputs
        if provider == "open_clip":
            crit = _open_clip_siglip()
            scale, bias = torch.tensor(1.0 / tau), torch.tensor(BIAS)
            return (lambda a, b: crit(F.normalize(a, dim=1), F.normalize(b, dim=1), scale, bias)), inputs
        if provider == "naive":

            def naive_siglip(a, b):
                logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau + BIAS
                sign = 2 * torch.eye(N) - 1
                return -F.logsigmoid(sign * logits).sum() / N

            return naive_siglip, inputs
    if objective == "dcl":
        B = N // 2
        inputs = [torch.randn(B, d), torch.randn(B, d)]
        if provider == "contrastive":
            return (lambda a, b: C.info_nce(a, b, tau, decoupled=True)), inputs
        if provider == "naive":

            def naive_dcl(a, b):
                z = F.normalize(torch.cat([a, b]), dim=1)
                p = (torch.arange(N) + B) % N
                S = z @ z.T / tau
                pos = S[torch.arange(N), p]
                drop = torch.eye(N, dtype=torch.bool)
                drop[torch.arange(N), p] = True
                return (torch.logsumexp(S.masked_fill(drop, float("-inf")), 1) - pos).mean()

            return naive_dcl, inputs
    if objective in FEATURES:
        return _make_feature(objective, provider, N, d, tau)
    if objective == "matryoshka":
        return _make_matryoshka(provider, N, d, tau)
    raise ValueError(f"unknown provider {provider!r} for objective {objective!r}")


def mrl_dims(d: int) -> tuple[int, ...]:
    """The five prefix dimensions at width d (d a multiple of 12)."""
    return tuple(d * f // 12 for f in MRL_FRACTIONS)


def _make_feature(objective: str, provider: str, N: int, d: int, tau: float):
    """Issue 25's features on B = N / 2 anchors, positives and K = 1 hard negative each."""
    import torch
    import torch.nn.functional as F

    import contrastive as C

    B = N // (1 + K)
    inputs = [torch.randn(B, d), torch.randn(B, d), torch.randn(B, K, d)]
    guide = (torch.randn(B, d), torch.randn(B, d), torch.randn(B, K, d))  # as wide as the model
    kw = {
        "hardness": dict(hardness_mode="all_negatives", hardness_strength=1.0),
        "hcl": dict(hcl_beta=1.0, hcl_tau_plus=0.1),
        "gist": dict(guide=guide, guide_margin=0.05),
        "gte4": dict(directions=ALL4),
    }[objective]
    if provider == "contrastive":
        return (lambda a, p, n: C.retrieval_loss(a, p, n, tau, **kw)), inputs
    if provider != "naive":
        raise ValueError(f"unknown provider {provider!r} for objective {objective!r}")
    eye = torch.eye(B, dtype=torch.bool)
    pos_col = torch.cat([eye, torch.zeros(B, B * K, dtype=torch.bool)], 1)  # (B, B (1 + K))
    own = torch.cat([eye, eye.repeat_interleave(K, 1)], 1)

    def naive(a, p, n):
        a, p = F.normalize(a, dim=1), F.normalize(p, dim=1)
        docs = torch.cat([p, F.normalize(n.reshape(-1, d), dim=1)])
        s = a @ docs.T  # (B, B (1 + K)) cosines
        L = s / tau
        if objective == "hardness":
            L = L + 1.0 * s.detach() * ~pos_col
        if objective == "gist":
            ga, gp, gn = (F.normalize(x.reshape(-1, d), dim=1) for x in guide)
            g = ga @ torch.cat([gp, gn]).T
            thr = g[:, :B].diagonal()[:, None] - 0.05
            L = L.masked_fill((g > thr) & ~pos_col, float("-inf"))
        pos = L[:, :B].diagonal()
        if objective == "hcl":
            e_pos = pos.exp()
            neg = L.exp().masked_fill(pos_col, 0.0)
            imp = neg.clone()  # exp(beta L) with beta = 1
            n_neg = B * (1 + K) - 1
            Ng = (-0.1 * n_neg * e_pos + (imp * neg).sum(1) / (imp.sum(1) / n_neg)) / 0.9
            Ng = Ng.clamp(min=n_neg * torch.exp(torch.tensor(-1 / tau)))
            return -torch.log(e_pos / (e_pos + Ng)).mean()
        blocks = [L]
        if objective == "gte4":
            qq = (a @ a.T / tau).masked_fill(eye, float("-inf"))
            dq = (p @ a.T) / tau
            dd = (p @ docs.T / tau).masked_fill(own, float("-inf"))
            blocks += [qq, dq, dd]
        return (torch.logsumexp(torch.cat(blocks, 1), 1) - pos).mean()

    return naive, inputs


def _make_matryoshka(provider: str, N: int, d: int, tau: float):
    """Retrieval (B = N / 2 anchors, K = 1 hard negative each) with five Matryoshka prefixes."""
    import torch
    import torch.nn.functional as F

    import contrastive as C

    B, dims = N // (1 + K), mrl_dims(d)
    inputs = [torch.randn(B, d), torch.randn(B, d), torch.randn(B, K, d)]
    if provider == "contrastive":
        return (lambda a, p, n: C.retrieval_loss(a, p, n, tau, matryoshka_dims=dims)), inputs
    if provider == "full":
        return (lambda a, p, n: C.retrieval_loss(a, p, n, tau)), inputs
    if provider == "separate":

        def separate(a, p, n):
            return sum(C.retrieval_loss(a[:, :k], p[:, :k], n[..., :k], tau) for k in dims)

        return separate, inputs
    if provider == "naive":

        def naive_matryoshka(a, p, n):
            total = 0.0
            for k in dims:
                ak = F.normalize(a[:, :k], dim=1)
                cand = F.normalize(torch.cat([p[:, :k], n[..., :k].reshape(-1, k)]), dim=1)
                total = total + F.cross_entropy(ak @ cand.T / tau, torch.arange(B))
            return total

        return naive_matryoshka, inputs
    raise ValueError(f"unknown provider {provider!r} for objective 'matryoshka'")


def worker(args) -> None:
    import resource

    cap = int(args.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    torch.manual_seed(0)
    fn, inputs = _make(args.objective, args.provider, args.n, args.d)
    base.measure(fn, inputs, True, args)


def paired(a) -> None:
    """supcon_loss and nt_xent at the same N, d, tau, alternated call by call in one process, so
    that a changing machine load hits both alike; prints both medians and their ratio."""
    import torch

    torch.manual_seed(0)
    fns = {p: _make("supcon", p, a.n, a.d) for p in ("contrastive", "nt_xent")}
    times = {p: [] for p in fns}
    for k in range(a.repeats + 1):  # call 0 of each: warm-up
        for p, (fn, inputs) in fns.items():
            z = inputs[0].detach().requires_grad_()
            t0 = time.perf_counter()
            fn(z).backward()
            if k:
                times[p].append(time.perf_counter() - t0)
    med = {p: statistics.median(t) for p, t in times.items()}
    print(
        f"N={a.n} d={a.d}: supcon_loss {med['contrastive']:.3f} s, nt_xent {med['nt_xent']:.3f} s "
        f"(medians of {a.repeats} alternated calls); supcon / nt_xent = {med['contrastive'] / med['nt_xent']:.3f}"
    )


# ---------------------------------------------------------------- driver side


def run_one(objective: str, provider: str, N: int, d: int, a) -> dict:
    big = N >= 65536 or (provider == "pml" and N >= 4096)  # one timed call, no warm-up
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--objective",
        objective,
        "--provider",
        provider,
        "--n",
        str(N),
        "--d",
        str(d),
        "--mem-gib",
        str(a.mem_gib),
        "--repeats",
        str(1 if big else a.repeats),
        "--budget-s",
        str(a.timeout_s / 3),
    ]
    if not big:
        cmd.append("--warmup")
    row = {"objective": objective, "provider": provider, "N": N, "d": d, "mode": "fwd+bwd"}
    return base.run_worker(cmd, row, a.timeout_s)


def plan(a) -> list:
    """[(objective, provider, N, d), ...]."""
    sizes = a.sizes or ((512, 1024) if a.quick else (4096, 16384))
    third = {
        "supcon": ["pml", "nt_xent"],
        "siglip": ["open_clip"],
        "retrieval": [],
        "dcl": [],
        "matryoshka": ["full", "separate"],
    }
    third.update({f: [] for f in FEATURES})
    out = []
    for obj in a.objectives:
        d = (96 if a.quick else MRL_D) if obj == "matryoshka" else (64 if a.quick else 128)
        for n in sizes:
            out += [
                (obj, p, n, d)
                for p in ["contrastive", "naive", *third[obj]]
                if not a.providers or p in a.providers
            ]
        if not a.quick and not a.sizes:
            out += [(obj, "contrastive", 65536, d)] + (
                [(obj, "nt_xent", 65536, d)] if obj == "supcon" else []
            )
    return out


def table(rows) -> str:
    """Markdown table; ratios against naive autograd of the same objective and N, in this run.
    'above start': peak RSS minus the RSS before the first call (torch, inputs)."""
    out = [
        "| objective | N | provider | time (ms) | naive's time / this | peak RSS (MiB) | "
        "peak / naive's peak | above start / naive's | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"| {r['objective']} | {r['N']} | {r['provider']} | | | | | | {r['status']} |")
            continue
        nv = [
            x
            for x in rows
            if x["objective"] == r["objective"]
            and x["N"] == r["N"]
            and x["d"] == r["d"]
            and x["provider"] == "naive"
            and x["status"] == "ok"
        ]
        sp = mem = above = ""
        if nv and r["provider"] != "naive":
            n = nv[0]
            sp = f"{n['time_s'] / r['time_s']:.2f}x"
            f = n["peak_rss_mib"] / r["peak_rss_mib"]
            mem = f"1/{f:.1f}" if f >= 1 else f"{1 / f:.1f}x"
            gap = r["peak_rss_mib"] - r["base_rss_mib"]
            g = (n["peak_rss_mib"] - n["base_rss_mib"]) / gap if gap > 0 else 0.0
            above = "" if not g else f"1/{g:.0f}" if g >= 1 else f"{1 / g:.1f}x"
        out.append(
            f"| {r['objective']} | {r['N']} | {r['provider']} | {r['time_s'] * 1e3:.1f} | {sp} | "
            f"{r['peak_rss_mib']:.0f} | {mem} | {above} | ok |"
        )
    return "\n".join(out)


def matryoshka_ratios(rows) -> str:
    """The Matryoshka targets, per N: one call with the dims against one full-width call and
    against the five separate calls (same run)."""
    out = []
    for n in sorted({r["N"] for r in rows if r["objective"] == "matryoshka"}):
        t = {
            r["provider"]: r["time_s"]
            for r in rows
            if r["objective"] == "matryoshka" and r["N"] == n and r["status"] == "ok"
        }
        if "contrastive" in t and "full" in t:
            line = (
                f"matryoshka N={n}: dims / full width = {t['contrastive'] / t['full']:.2f}x (target <= 1.25x)"
            )
            if "separate" in t:
                line += f", separate / dims = {t['separate'] / t['contrastive']:.2f}x (target >= 1.7x)"
            out.append(line)
    return "\n".join(out)


def read_csv(path: Path) -> list:
    """Rows of a CSV this script wrote, numbers parsed."""
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            r["N"], r["d"] = int(r["N"]), int(r["d"])
            for k in ("time_s", "peak_rss_mib", "base_rss_mib"):
                r[k] = float(r[k]) if r.get(k) else None
            rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--objective", default="supcon", choices=sorted(TAU))
    ap.add_argument("--provider", default="contrastive")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", action="store_true")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--mem-gib", type=float, default=10.0, help="address-space cap per configuration")
    ap.add_argument("--timeout-s", type=float, default=400.0)
    ap.add_argument("--quick", action="store_true", help="small N only, a smoke run")
    ap.add_argument(
        "--objectives",
        nargs="+",
        default=["supcon", "retrieval", "siglip", "dcl", *FEATURES, "matryoshka"],
        choices=sorted(TAU),
    )
    ap.add_argument("--sizes", nargs="+", type=int, default=None, help="N values (no N = 65536 rows then)")
    ap.add_argument("--providers", nargs="+", default=None, help="only these providers")
    ap.add_argument(
        "--with-info-nce",
        action="store_true",
        help="also re-run bench_info_nce.py's N = 16384 rows (NT-Xent, CLIP)",
    )
    ap.add_argument("--out", default=None, help="CSV / PNG name under benchmarks/results/")
    ap.add_argument(
        "--paired", action="store_true", help="supcon_loss against nt_xent at --n, alternated in one process"
    )
    ap.add_argument("--table", default=None, metavar="CSV", help="only print the table (and plot) of a CSV")
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.paired:
        return paired(a)
    if a.table:
        rows = read_csv(Path(a.table))
        plot(rows, Path(a.table).with_suffix(".png"), f"forward + backward, float32: {base.machine()}")
        print(table(rows))
        return print(matryoshka_ratios(rows))

    rows = []
    for cfg in plan(a):
        r = run_one(*cfg, a)
        rows.append(r)
        print(f"{cfg[0]:9s} N={cfg[2]:6d} d={cfg[3]:4d} {cfg[1]:12s} {base.result_text(r)}", flush=True)
    if a.with_info_nce:
        for obj, prov in [
            ("nt_xent", "contrastive"),
            ("nt_xent", "naive"),
            ("nt_xent", "gemm2"),
            ("clip", "contrastive"),
            ("clip", "naive"),
        ]:
            r = base.run_one(obj, prov, 16384, 128, "fwd+bwd", a)
            rows.append(r)
            print(
                f"{obj:9s} N={16384:6d} d={128:4d} {prov:12s} {base.result_text(r)}  (bench_info_nce.py)",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    name = a.out or ("bench_objectives_quick" if a.quick else "bench_objectives")
    fields = ["objective", *base.MEASURED]
    base.write_csv(RESULTS / f"{name}.csv", fields, rows)
    desc = base.machine()
    plot(rows, RESULTS / f"{name}.png", f"forward + backward, float32: {desc}")
    print(f"\nMachine: {desc}\n")
    print(table(rows))
    print(matryoshka_ratios(rows))
    print(f"\nwrote {RESULTS / (name + '.csv')} and .png")


def plot(rows, path: Path, title: str) -> None:
    """One panel pair (time, peak RSS against N) per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = [o for o in TAU if any(r["objective"] == o for r in rows)]
    if not objs:
        return
    fig, axes = plt.subplots(2, len(objs), figsize=(4.2 * len(objs), 7), squeeze=False)
    for k, obj in enumerate(objs):
        sub = [r for r in rows if r["objective"] == obj and r["status"] == "ok"]
        for prov in sorted({r["provider"] for r in sub}):
            pts = sorted((r["N"], r) for r in sub if r["provider"] == prov)
            axes[0, k].plot([n for n, _ in pts], [r["time_s"] for _, r in pts], "o-", label=prov)
            axes[1, k].plot([n for n, _ in pts], [r["peak_rss_mib"] for _, r in pts], "o-", label=prov)
        axes[0, k].set_title(obj)
        axes[0, k].legend(fontsize=8)
        for ax, lab in zip(axes[:, k], ["time per fwd+bwd (s)", "peak RSS (MiB)"]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("N")
            ax.set_ylabel(lab)
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
