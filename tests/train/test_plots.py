"""Plots are written as PNG files."""

from __future__ import annotations

import torch

from contrastive.train.plots import plot_accuracy, plot_embedding_map, plot_loss, project_2d

PNG = b"\x89PNG"


def test_plots_write_png(tmp_path):
    records = [
        {"epoch": 0},
        {"epoch": 1, "loss": 3.0},
        {"epoch": 2, "loss": 2.0, "knn_accuracy": 0.9, "linear_accuracy": 0.95},
    ]
    assert plot_loss(records, tmp_path / "l.png").read_bytes()[:4] == PNG
    assert (
        plot_accuracy(records, tmp_path / "a.png", {"raw pixels": {"knn_accuracy": 0.8}}).read_bytes()[:4]
        == PNG
    )
    f, y = torch.randn(40, 6), torch.arange(40) % 4
    assert plot_embedding_map(f, y, tmp_path / "m.png", classes=["a", "b", "c", "d"]).read_bytes()[:4] == PNG
    assert plot_embedding_map(f, y, tmp_path / "t.png", method="tsne").read_bytes()[:4] == PNG


def test_pca_projection_keeps_the_main_axis():
    x = torch.zeros(10, 3)
    x[:, 1] = torch.arange(10.0)
    xy = project_2d(x)
    assert abs(xy[:, 0]).max() == 4.5 and abs(xy[:, 1]).max() < 1e-9
