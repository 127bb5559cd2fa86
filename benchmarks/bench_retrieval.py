"""What each option of ``contrastive train retrieval`` is worth on the default pycode task.

Runs the recipe once per variant (the default, no hard negatives, a 4x larger batch through
gradient caching, the SigLIP loss, ...) with everything else at its defaults, and writes the
held-out test metrics of each (MRR@10, Recall@1, Recall@10, nDCG@10 for the trained encoder
and for BM25 + trained fused by reciprocal rank), the wall and CPU time and the machine's load
average to ``benchmarks/results/retrieval.csv`` and a bar plot to ``retrieval.png``.

    python benchmarks/bench_retrieval.py                      # every variant (about 5 min each on 2 cores)
    python benchmarks/bench_retrieval.py --variants default siglip --root /tmp/runs
    python benchmarks/bench_retrieval.py --variants default "HCL beta 0.5" \
        --extra "--data.packages=stdlib --train.epochs=1 --data.train_limit=200"   # a smoke check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "default": [],
    "no hard negatives": ["--pairs.hard_negatives=0"],
    "batch 1024 via chunk_size 256": ["--train.batch_size=1024", "--train.chunk_size=256"],
    "siglip": ["--loss.name=siglip", "--loss.temperature=0.1"],
    "two directions per_direction": [
        "--loss.directions=query_to_doc,doc_to_query",
        "--loss.partition_mode=per_direction",
    ],
    "GTE four directions joint": [
        "--loss.directions=query_to_doc,doc_to_query,query_to_query,doc_to_doc",
        "--loss.partition_mode=joint",
    ],
    "hardness all_negatives 5": ["--loss.hardness_mode=all_negatives", "--loss.hardness_strength=5"],
    "hardness hard_negatives 5": ["--loss.hardness_mode=hard_negatives", "--loss.hardness_strength=5"],
    "HCL beta 0.5": ["--loss.hcl_beta=0.5"],
    "Matryoshka 256,128,64,32": ["--loss.matryoshka_dims=256,128,64,32"],
    "learnable temperature": ["--loss.learn_temperature=true"],
    "two towers": ["--model.shared=false"],
}
OUT = Path(__file__).resolve().parent / "results"


def run(name: str, extra, root: str, more=()) -> dict:
    folder = re.sub(r"[^A-Za-z0-9_.]+", "-", name)
    cmd = [
        sys.executable,
        "-m",
        "contrastive",
        "train",
        "retrieval",
        f"--run.root={root}",
        f"--run.name={folder}",
        "--run.overwrite=true",
        "--run.progress=false",
        *extra,
        *more,
    ]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = json.loads((Path(root) / folder / "summary.json").read_text())
    t, b = s["trained"], s["baselines"]
    return {
        "variant": name,
        "args": " ".join([*extra, *more]),
        "mrr_at_10": t["mrr_at_10"],
        "recall_at_1": t["recall_at_1"],
        "recall_at_10": t["recall_at_10"],
        "ndcg_at_10": t["ndcg_at_10"],
        "fused_mrr_at_10": t["fused_mrr_at_10"],
        "bm25_mrr_at_10": b["bm25"]["mrr_at_10"],
        "tfidf_mrr_at_10": b["tfidf"]["mrr_at_10"],
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "load_1min_start": round(load, 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
    }


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.3))
    y = list(range(len(rows)))
    ax.barh(y, [r["mrr_at_10"] for r in rows], height=0.4, label="trained encoder")
    ax.barh(
        [v + 0.4 for v in y], [r["fused_mrr_at_10"] for r in rows], height=0.4, label="BM25 + trained (RRF)"
    )
    ax.axvline(rows[0]["bm25_mrr_at_10"], color="k", ls="--", label="BM25")
    ax.set_yticks([v + 0.2 for v in y], [r["variant"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("test MRR@10")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"any of {list(VARIANTS)}")
    p.add_argument("--root", default="runs/bench-retrieval")
    p.add_argument("--out", default=str(OUT / "retrieval.csv"))
    p.add_argument(
        "--extra",
        default="",
        help="overrides added to every variant, one string (e.g. a smaller run to check the script)",
    )
    args = p.parse_args()
    rows = []
    for name in args.variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
        rows.append(run(name, VARIANTS[name], args.root, shlex.split(args.extra)))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out.with_suffix(".png"))
    print(
        f"{'variant':<32} {'MRR@10':>7} {'R@1':>6} {'R@10':>6} {'nDCG@10':>8} {'fused':>6} {'wall s':>7} "
        f"{'cpu s':>6} load"
    )
    for r in rows:
        print(
            f"{r['variant']:<32} {r['mrr_at_10']:7.4f} {r['recall_at_1']:6.4f} {r['recall_at_10']:6.4f} "
            f"{r['ndcg_at_10']:8.4f} {r['fused_mrr_at_10']:6.4f} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} "
            f"{r['load_1min_start']}-{r['load_1min_end']}"
        )
    print(
        f"BM25 {rows[0]['bm25_mrr_at_10']:.4f}, TF-IDF {rows[0]['tfidf_mrr_at_10']:.4f}; wrote {out} and "
        f"{out.with_suffix('.png')}"
    )


if __name__ == "__main__":
    main()
