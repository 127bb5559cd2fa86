"""Augmentations: shapes, range, seeding and the errors for mismatched data."""

from __future__ import annotations

import pytest
import torch

from contrastive.train.augment import build_augment, resolve_kind, two_views
from contrastive.train.config import AugmentConfig


@pytest.mark.parametrize(
    "kind, shape",
    [
        ("affine", (1, 8, 8)),
        ("simclr", (3, 16, 16)),
        ("noise", (10,)),
        ("none", (1, 8, 8)),
        ("auto", (3, 12, 12)),
    ],
)
def test_shapes_and_range(kind, shape):
    aug = build_augment(AugmentConfig(kind=kind), shape)
    x = torch.rand(6, *shape)
    torch.manual_seed(0)
    v1, v2 = two_views(aug, x)
    assert v1.shape == v2.shape == x.shape and v1.dtype == torch.float32
    if len(shape) == 3:
        assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0
    if kind != "none":
        assert not torch.equal(v1, v2)


@pytest.mark.parametrize("kind, shape", [("affine", (1, 8, 8)), ("simclr", (3, 16, 16))])
def test_seeded_views_are_reproducible(kind, shape):
    aug = build_augment(AugmentConfig(kind=kind), shape)
    x = torch.rand(8, *shape)
    before = torch.get_rng_state()
    a = two_views(aug, x, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # a seed leaves the global generator alone
    b = two_views(aug, x, seed=3)
    c = two_views(aug, x, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(5)
    d = aug(x)
    torch.manual_seed(5)
    assert torch.equal(d, aug(x))  # the global seed drives the unseeded path


def test_views_differ_per_sample():
    aug = build_augment(AugmentConfig(kind="affine", noise_p=0.0, erase_p=0.0), (1, 8, 8))
    x = torch.rand(1, 1, 8, 8).expand(4, 1, 8, 8).contiguous()
    v, _ = two_views(aug, x, seed=0)
    assert not torch.equal(v[0], v[1])  # each sample gets its own parameters


def test_errors():
    with pytest.raises(ValueError, match="augment.kind must be one of"):
        resolve_kind("fancy", (1, 8, 8))
    with pytest.raises(ValueError, match="RGB"):
        build_augment(AugmentConfig(kind="simclr"), (1, 8, 8))
    with pytest.raises(ValueError, match="augment.kind=noise"):
        build_augment(AugmentConfig(kind="affine"), (64,))
    aug = build_augment(AugmentConfig(), (1, 8, 8))
    with pytest.raises(TypeError, match="to_float"):
        two_views(aug, torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="nn.Module"):
        two_views(lambda t: t, torch.zeros(2, 1, 8, 8))
