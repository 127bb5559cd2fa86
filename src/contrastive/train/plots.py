"""PNG plots of a run (matplotlib, Agg backend): loss curve, accuracy curve, 2-D map of the
test embeddings (PCA or t-SNE) coloured by class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._optional import needs

__all__ = ["plot_accuracy", "plot_embedding_map", "plot_loss", "project_2d", "pyplot"]


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend forced (plots are files;
    no display is needed or used). Imported on first use: matplotlib is only needed to plot.

    Returns:
        The ``matplotlib.pyplot`` module.

    Example:
        >>> pyplot().get_backend().lower()
        'agg'
    """
    with needs("train", "the plots"):
        import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(records: list[dict], key: str):
    pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_loss(records: list[dict], path, ylabel: str = "InfoNCE loss (train)") -> Path:
    """Training loss per epoch (from the metrics records) to ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x, y = _series(records, "loss")
    ax.plot(x, y, marker="." if len(x) < 30 else None)
    ax.set(xlabel="epoch", ylabel=ylabel, title="training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_accuracy(records: list[dict], path, baselines: dict[str, dict[str, float]] | None = None) -> Path:
    """kNN and linear-probe test accuracy per evaluated epoch, with the baselines as lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("knn_accuracy", "kNN"), ("linear_accuracy", "linear probe")):
        x, y = _series(records, key)
        if x:
            ax.plot(x, [100 * v for v in y], marker="o", label=label)
    styles = iter(["--", ":", "-."])
    for name, metrics in (baselines or {}).items():
        if metrics.get("knn_accuracy") is not None:
            ax.axhline(
                100 * metrics["knn_accuracy"], ls=next(styles, "--"), color="gray", label=f"{name} kNN"
            )
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def project_2d(features: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, d)`` features to ``(N, 2)`` by PCA (on the centred features) or t-SNE.

    Examples:
        >>> project_2d(torch.randn(10, 5)).shape
        (10, 2)
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or len(features) < 2:
        raise ValueError("features must be a tensor of shape (N, d) with N >= 2")
    x = features.double().numpy()
    x = x - x.mean(0)
    if method == "pca":
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        out = x @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    with needs("train", "the t-SNE plot"):
        from sklearn.manifold import TSNE

    return TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, len(x) - 1.0)).fit_transform(x)


def plot_embedding_map(
    features: torch.Tensor,
    labels: torch.Tensor,
    path,
    method: str = "pca",
    classes: Sequence[str] = (),
    title: str = "test embeddings",
) -> Path:
    """Scatter of the 2-D projection of ``features`` coloured by ``labels`` to ``path``."""
    plt = pyplot()
    xy = project_2d(features, method)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    labels = labels.numpy()
    cmap = plt.get_cmap("tab10" if labels.max(initial=0) < 10 else "tab20")
    for c in np.unique(labels):
        m = labels == c
        name = classes[c] if 0 <= c < len(classes) else str(c)
        ax.scatter(
            xy[m, 0], xy[m, 1], s=6, color=cmap(int(c) % cmap.N), label=name if len(classes) <= 20 else None
        )
    if 0 < len(np.unique(labels)) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best", ncol=2)
    ax.set(title=f"{title} ({ {'pca': 'PCA', 'tsne': 't-SNE'}[method] })", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
