"""Benchmark cosine similarity metric learning against metric-learn on verification pairs.

Data: scikit-learn's embedded data sets (digits, wine, breast cancer, iris). For each, a
stratified 50/50 split of the points (seeded), features standardised on the training half,
then balanced similar/dissimilar pairs sampled from the class labels within each half
(``contrastive.metric.pairs_from_labels``, seeded): training pairs and test pairs never share
a point. Every method sees the same standardised features and the same pairs.

Methods (ROC-AUC of the similarity on the test pairs, fit time on the training pairs):
  raw cosine            cosine of the standardised features (nothing to fit)
  whitened PCA cosine   cosine after whitened PCA keeping 99% of the variance: the
                        learner's starting point
  CSML map / symmetric  contrastive.metric.CosineSimilarityLearner, objective='csml'
  margin map / symmetric  the same with objective='margin'
  MMC, ITML             metric-learn 0.7.0 pair learners, defaults, on the training pairs
  LMNN                  metric-learn 0.7.0, defaults, on the training points and class labels

metric-learn 0.7.0 fails with scikit-learn >= 1.8 and runs with 1.5.2, so its side runs
in a virtual environment of its own, benchmarks/.envs/metric-learn (created on first use
with scikit-learn==1.5.2, metric-learn==0.7.0, numpy<2), as a subprocess; the two sides
exchange data through an .npz and a JSON file. Both sides run with the same BLAS thread
count (--threads, default 1: on this shared 2-core machine multi-threaded OpenBLAS was up
to 10x slower for these small products). Fit time is the minimum over --repeats fits.
Output: benchmarks/results/bench_metric.csv, bench_metric.png and a Markdown table.

    python benchmarks/bench_metric.py                  # the README's configuration
    python benchmarks/bench_metric.py --quick          # iris and wine only, one repeat
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ENV = HERE / ".envs" / "metric-learn"
PINS = ["scikit-learn==1.5.2", "metric-learn==0.7.0", "numpy<2"]
DATASETS = ("digits", "wine", "breast_cancer", "iris")
OURS = {
    "CSML map": dict(form="map", objective="csml"),
    "CSML symmetric": dict(form="symmetric", objective="csml"),
    "margin map": dict(form="map", objective="margin"),
    "margin symmetric": dict(form="symmetric", objective="margin"),
}
ORDER = ["raw cosine", "whitened PCA cosine", *OURS, "MMC", "ITML", "LMNN"]


def ensure_env() -> Path:
    """The metric-learn environment's interpreter, created on first use."""
    py = ENV / "bin" / "python"
    probe = "import metric_learn, sklearn; assert metric_learn.__version__ == '0.7.0' and sklearn.__version__ == '1.5.2'"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return py
    print(f"setting up {ENV} ({', '.join(PINS)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    return py


def make_data(names, seed, n_train, n_test):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from contrastive.metric import pairs_from_labels

    loaders = dict(
        digits=datasets.load_digits,
        wine=datasets.load_wine,
        breast_cancer=datasets.load_breast_cancer,
        iris=datasets.load_iris,
    )
    out = {}
    for name in names:
        X, labels = loaders[name](return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.5, stratify=labels, random_state=seed)
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
        pairs, y = pairs_from_labels(Xtr, ytr, n_train, random_state=seed + 1)
        test, y_test = pairs_from_labels(Xte, yte, n_test, random_state=seed + 2)
        out[name] = dict(
            train_pairs=pairs,
            train_y=y,
            train_X=Xtr,
            train_labels=ytr,
            test_pairs=test,
            test_y=y_test,
            shape=X.shape,
        )
    return out


def run_ours(data, repeats):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from contrastive.metric import CosineSimilarityLearner
    from contrastive.metric._base import whitened_pca

    def cos(p):
        return (p[:, 0] * p[:, 1]).sum(1) / np.linalg.norm(p[:, 0], axis=1) / np.linalg.norm(p[:, 1], axis=1)

    rows = []
    for name, d in data.items():
        pairs, y, test, y_test = d["train_pairs"], d["train_y"], d["test_pairs"], d["test_y"]
        rows.append(
            dict(dataset=name, method="raw cosine", roc_auc=roc_auc_score(y_test, cos(test)), fit_s=0.0)
        )
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            points = np.unique(pairs.reshape(-1, pairs.shape[2]), axis=0)
            mean, M0 = whitened_pca(points, 0.99, center=True)
            times.append(time.perf_counter() - t0)
        auc = roc_auc_score(y_test, cos((test - mean) @ M0.T))
        rows.append(dict(dataset=name, method="whitened PCA cosine", roc_auc=auc, fit_s=min(times)))
        for method, params in OURS.items():
            times = []
            for _ in range(repeats):
                learner = CosineSimilarityLearner(**params)
                t0 = time.perf_counter()
                learner.fit(pairs, y)
                times.append(time.perf_counter() - t0)
            rows.append(
                dict(dataset=name, method=method, roc_auc=learner.score(test, y_test), fit_s=min(times))
            )
        for r in rows[-len(OURS) - 2 :]:
            print(f"  {name:14s} {r['method']:20s} auc {r['roc_auc']:.4f}  fit {r['fit_s']:.3f}s", flush=True)
    return rows


def run_metric_learn(data, repeats, seed, threads):
    import numpy as np

    py = ensure_env()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "pairs.npz", Path(tmp) / "out.json"
        np.savez(src, **{f"{n}/{k}": v for n, d in data.items() for k, v in d.items() if k != "shape"})
        env = dict(os.environ, **thread_env(threads))
        subprocess.run(
            [str(py), str(HERE / "_metric_learn_worker.py"), str(src), str(dst), str(repeats), str(seed)],
            check=True,
            env=env,
        )
        out = json.loads(dst.read_text())
    return out["rows"], out["versions"]


def thread_env(threads):
    return {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def machine(threads) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()}-core CPU, {threads} BLAS thread(s)"


def table(rows, names) -> str:
    cell = {(r["dataset"], r["method"]): r for r in rows}
    head = "| method | " + " | ".join(f"{n} AUC | fit s" for n in names) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(names))]
    for m in ORDER:
        if not any((n, m) in cell for n in names):
            continue
        vals = []
        for n in names:
            r = cell.get((n, m))
            vals += (
                ["", ""]
                if r is None
                else [f"{r['roc_auc']:.4f}", "-" if m == "raw cosine" else f"{r['fit_s']:.2f}"]
            )
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(rows, names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [m for m in ORDER if any(r["method"] == m for r in rows)]
    cell = {(r["dataset"], r["method"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = np.arange(len(names)) + i * width
        axes[0].bar(
            xs, [cell[(n, m)]["roc_auc"] if (n, m) in cell else np.nan for n in names], width, label=m
        )
        fit = [cell[(n, m)]["fit_s"] if (n, m) in cell and m != "raw cosine" else np.nan for n in names]
        axes[1].bar(xs, fit, width)
    for ax, label in zip(axes, ("test ROC-AUC", "fit time (s, log; raw cosine has no fit)")):
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax.set_ylabel(label)
    axes[0].set_ylim(0.6, 1.0)
    axes[1].set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("Cosine similarity metric learning vs metric-learn 0.7.0 (verification pairs)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--n-train-pairs", type=int, default=2000)
    ap.add_argument("--n-test-pairs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads, both sides")
    ap.add_argument("--skip-metric-learn", action="store_true")
    ap.add_argument("--quick", action="store_true", help="iris and wine, one repeat")
    ap.add_argument("--out", default="bench_metric", help="file stem under benchmarks/results/")
    ap.add_argument("--from-csv", action="store_true", help="redraw the plot and table from the CSV")
    a = ap.parse_args()
    if a.from_csv:
        with open(RESULTS / f"{a.out}.csv") as f:
            rows = [dict(r, roc_auc=float(r["roc_auc"]), fit_s=float(r["fit_s"])) for r in csv.DictReader(f)]
        names = list(dict.fromkeys(r["dataset"] for r in rows))
        plot(rows, names, RESULTS / f"{a.out}.png")
        print(
            f"{rows[0]['machine']}; {rows[0]['n_train_pairs']} training / {rows[0]['n_test_pairs']} test "
            f"pairs, seed {rows[0]['seed']}\n\n{table(rows, names)}"
        )
        return
    os.environ.update(thread_env(a.threads))  # before NumPy is imported
    names = ["iris", "wine"] if a.quick else [n.strip() for n in a.datasets.split(",")]
    repeats = 1 if a.quick else a.repeats
    unknown = set(names) - set(DATASETS)
    if unknown:
        ap.error(f"unknown data sets {sorted(unknown)}; choose from {DATASETS}")

    data = make_data(names, a.seed, a.n_train_pairs, a.n_test_pairs)
    print(f"contrastive side ({machine(a.threads)})", flush=True)
    rows = run_ours(data, repeats)
    versions = {}
    if not a.skip_metric_learn:
        print("metric-learn side (own environment)", flush=True)
        ml_rows, versions = run_metric_learn(data, repeats, a.seed, a.threads)
        rows += ml_rows

    RESULTS.mkdir(exist_ok=True)
    desc = machine(a.threads)
    with open(RESULTS / f"{a.out}.csv", "w", newline="") as f:
        w = csv.DictWriter(
            f,
            fieldnames=[
                "dataset",
                "method",
                "roc_auc",
                "fit_s",
                "n_train_pairs",
                "n_test_pairs",
                "seed",
                "repeats",
                "machine",
                "metric_learn_env",
            ],
        )
        w.writeheader()
        for r in rows:
            w.writerow(
                dict(
                    r,
                    n_train_pairs=a.n_train_pairs,
                    n_test_pairs=a.n_test_pairs,
                    seed=a.seed,
                    repeats=repeats,
                    machine=desc,
                    metric_learn_env=json.dumps(versions) if versions else "",
                )
            )
    plot(rows, names, RESULTS / f"{a.out}.png")
    print(f"\n{desc}; {a.n_train_pairs} training / {a.n_test_pairs} test pairs, seed {a.seed}\n")
    print(table(rows, names))
    if "digits" in names and versions:
        ml = [r for r in rows if r["dataset"] == "digits" and r["method"] in ("MMC", "ITML", "LMNN")]
        best_auc, fastest = max(r["roc_auc"] for r in ml), min(r["fit_s"] for r in ml)
        print(
            f"\ndigits target: ROC-AUC >= {best_auc:.4f} (best metric-learn), fit <= {2 * fastest:.2f}s (2x fastest metric-learn)"
        )
        for r in rows:
            if r["dataset"] == "digits" and r["method"] in OURS:
                ok = r["roc_auc"] >= best_auc and r["fit_s"] <= 2 * fastest
                print(
                    f"  {r['method']:18s} auc {r['roc_auc']:.4f} fit {r['fit_s']:.2f}s  {'met' if ok else 'MISSED'}"
                )


if __name__ == "__main__":
    main()
