"""metric-learn's side of bench_metric.py, run in its own environment.

metric-learn 0.7.0 needs scikit-learn < 1.8 (it passes ``force_all_finite`` to
``check_X_y``), so bench_metric.py runs this file with the interpreter of a virtual
environment holding scikit-learn 1.5.2 and metric-learn 0.7.0. It imports nothing from
``contrastive``. Input: an .npz written by bench_metric.py (for each data set the training
pairs and points, the test pairs); output: a JSON list of {dataset, method, roc_auc, fit_s}.

    python _metric_learn_worker.py IN.npz OUT.json REPEATS SEED
"""

import json
import sys
import time
import warnings

import numpy as np
from sklearn.metrics import roc_auc_score


def main():
    src, dst, repeats, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    import metric_learn
    import sklearn
    from metric_learn import ITML, LMNN, MMC

    data = np.load(src)
    names = [k[: -len("/train_pairs")] for k in data.files if k.endswith("/train_pairs")]
    rows = []
    for name in names:
        pairs, y = data[f"{name}/train_pairs"], data[f"{name}/train_y"]
        X, labels = data[f"{name}/train_X"], data[f"{name}/train_labels"]
        test, y_test = data[f"{name}/test_pairs"], data[f"{name}/test_y"]
        makers = [
            # pair learners on the training pairs (y in {+1, -1}), defaults as shipped
            ("MMC", lambda: MMC(random_state=seed), (pairs, y)),
            ("ITML", lambda: ITML(random_state=seed), (pairs, y)),
            # LMNN is a supervised learner: the training points with their class labels
            ("LMNN", lambda: LMNN(random_state=seed), (X, labels)),
        ]
        for method, make, args in makers:
            times = []
            for _ in range(repeats):
                est = make()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    est.fit(*args)
                    times.append(time.perf_counter() - t0)
            auc = roc_auc_score(y_test, est.pair_score(test))  # pair_score = -distance
            rows.append(dict(dataset=name, method=method, roc_auc=float(auc), fit_s=min(times)))
            print(f"  {name:14s} {method:6s} auc {auc:.4f}  fit {min(times):.2f}s", flush=True)
    versions = dict(metric_learn=metric_learn.__version__, sklearn=sklearn.__version__, numpy=np.__version__)
    with open(dst, "w") as f:
        json.dump(dict(rows=rows, versions=versions), f)


if __name__ == "__main__":
    main()
