"""Evaluation of frozen representations on a held-out split.

- :func:`knn_accuracy`: weighted k-nearest-neighbour vote on cosine similarity, each of the
  ``k`` neighbours voting ``exp(s / temperature)`` for its class (Wu et al. 2018).
- :func:`retrieval_metrics`: ``precision_at_1`` and ``mean_average_precision_at_r`` with the
  test split as queries and the train split as reference (names and definitions as in
  pytorch-metric-learning's ``AccuracyCalculator``).
- :func:`linear_probe`: multinomial logistic regression on standardised frozen features.
- :func:`alignment` and :func:`uniformity` (Wang and Isola 2020) of L2-normalised embeddings.

All accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._optional import needs
from .data import to_float

__all__ = [
    "alignment",
    "embed",
    "evaluate_features",
    "knn_accuracy",
    "linear_probe",
    "retrieval_metrics",
    "uniformity",
]


def _check_features(name: str, f, labels=None, label_name: str = "") -> None:
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or not f.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor of shape (N, d), got "
            f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}"
        )
    if f.shape[0] == 0:
        raise ValueError(f"{name} is empty; evaluation needs at least one sample")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (f.shape[0],):
            raise ValueError(
                f"{label_name} must be a tensor of shape ({f.shape[0]},), one label per row of {name}"
            )
        if bool((labels < 0).any()):
            raise ValueError(f"{label_name} holds unlabelled samples (-1); evaluation needs labels")


@torch.no_grad()
def embed(module: nn.Module, x: torch.Tensor, batch_size: int = 512, device=None) -> torch.Tensor:
    """Run ``module`` in eval mode over ``x`` in batches; returns float32 features on the CPU.

    Shape:
        x ``(N, ...)`` (uint8 images are scaled to [0, 1]); returns ``(N, d)``.

    Examples:
        >>> embed(nn.Flatten(), torch.zeros(5, 1, 2, 2, dtype=torch.uint8), batch_size=2).shape
        torch.Size([5, 4])
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = (
        torch.device(device) if device is not None else next(iter(module.parameters()), torch.zeros(0)).device
    )
    was_training = module.training
    module.eval()
    try:
        out = [
            module(to_float(x[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        module.train(was_training)
    return torch.cat(out).reshape(len(x), -1)


def _top_similar(query: torch.Tensor, ref: torch.Tensor, k: int, chunk: int = 1024):
    q, r = F.normalize(query.float(), dim=1), F.normalize(ref.float(), dim=1)
    sims, idx = [], []
    for i in range(0, len(q), chunk):
        s, j = (q[i : i + chunk] @ r.T).topk(k, dim=1)  # (chunk, k)
        sims.append(s)
        idx.append(j)
    return torch.cat(sims), torch.cat(idx)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted kNN accuracy: each test sample takes the class with the largest summed
    ``exp(cos / temperature)`` over its ``k`` most cosine-similar training samples.

    Examples:
        >>> tr = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]); ytr = torch.tensor([0, 0, 1])
        >>> knn_accuracy(tr, ytr, torch.tensor([[1.0, 0.2], [0.1, 1.0]]), torch.tensor([0, 1]), k=1)
        1.0
    """
    _check_features("train_features", train_features, train_labels, "train_labels")
    _check_features("test_features", test_features, test_labels, "test_labels")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {train_features.shape[1]} vs {test_features.shape[1]}"
        )
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; 0.07 (DINO) or 0.1 are usual")
    k = min(k, len(train_features))
    sims, idx = _top_similar(test_features, train_features, k)  # (Nq, k)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    votes = torch.zeros(len(test_features), num_classes).scatter_add_(
        1, train_labels[idx], (sims / temperature).exp()
    )
    return float((votes.argmax(1) == test_labels).float().mean())


def retrieval_metrics(
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    reference_features: torch.Tensor,
    reference_labels: torch.Tensor,
) -> dict[str, float]:
    """``precision_at_1`` and ``mean_average_precision_at_r`` of cosine retrieval.

    For a query of class c, R is the number of references of class c; MAP@R averages
    ``(1/R) sum_{i <= R} P@i * rel_i`` over the queries (Musgrave et al. 2020).

    Examples:
        >>> ref = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]); yr = torch.tensor([0, 0, 1])
        >>> retrieval_metrics(torch.tensor([[1.0, 0.05]]), torch.tensor([0]), ref, yr)
        {'precision_at_1': 1.0, 'mean_average_precision_at_r': 1.0}
    """
    _check_features("query_features", query_features, query_labels, "query_labels")
    _check_features("reference_features", reference_features, reference_labels, "reference_labels")
    counts = torch.bincount(reference_labels, minlength=int(query_labels.max()) + 1)
    r = counts[query_labels]  # (Nq,)
    if bool((r == 0).any()):
        raise ValueError(
            "a query class has no reference sample; every test class must appear in the train split"
        )
    r_max = int(r.max())
    _, idx = _top_similar(query_features, reference_features, min(r_max, len(reference_features)))
    rel = (reference_labels[idx] == query_labels[:, None]).float()  # (Nq, R_max)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float32)
    within = (ranks[None, :] <= r[:, None]).float()
    precision_at_i = rel.cumsum(1) / ranks
    ap = (precision_at_i * rel * within).sum(1) / r.float()
    return {"precision_at_1": float(rel[:, 0].mean()), "mean_average_precision_at_r": float(ap.mean())}


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of logistic regression (L2 strength ``1/C``) on standardised features.

    The scaler and the classifier are fit on the train split only.
    """
    _check_features("train_features", train_features, train_labels, "train_labels")
    _check_features("test_features", test_features, test_labels, "test_labels")
    if C <= 0 or max_iter < 1:
        raise ValueError(f"C must be > 0 and max_iter >= 1, got {C} and {max_iter}")
    import warnings

    with needs("train", "the linear probe"):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

    classes = torch.unique(train_labels)
    if len(classes) < 2:
        raise ValueError(
            f"the linear probe needs at least two classes in the training labels, got only class "
            f"{classes.tolist()}; give the data a second class (a folder data set needs one sub-folder "
            f"per class) or turn the probe off with --eval.probe=false"
        )
    xtr, xte = train_features.double().numpy(), test_features.double().numpy()
    scaler = StandardScaler().fit(xtr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(xtr), train_labels.numpy())
    return float(np.mean(clf.predict(scaler.transform(xte)) == test_labels.numpy()))


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """``E ||f(x) - f(y)||^alpha`` over positive pairs of L2-normalised embeddings (lower is better).

    Examples:
        >>> alignment(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]))  # |(1, -1)|^2
        2.0
    """
    _check_features("z1", z1)
    _check_features("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have one shape (row i of each is a positive pair), got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    d = F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)
    return float(d.norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0, max_samples: int | None = 4096) -> float:
    """``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs of normalised embeddings (lower
    is more uniform; -4 is the limit for t = 2 on a high-dimensional sphere).

    Examples:
        >>> round(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])), 3)   # log exp(-2 * 4)
        -8.0
    """
    _check_features("z", z)
    if len(z) < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    z = F.normalize(z.float(), dim=1)
    if max_samples is not None and len(z) > max_samples:
        z = z[:max_samples]
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, 0) - np.log(len(sq)))


def evaluate_features(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    probe: bool = True,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """kNN accuracy, retrieval metrics and (when ``probe``) the linear-probe accuracy."""
    out = {"knn_accuracy": knn_accuracy(train_f, train_y, test_f, test_y, k, temperature)}
    out.update(retrieval_metrics(test_f, test_y, train_f, train_y))
    if probe:
        out["linear_accuracy"] = linear_probe(train_f, train_y, test_f, test_y, C, max_iter)
    return out
