"""Batched, on-device augmentations (kornia) that make SimCLR's two views of each sample.

Three sets, picked by ``augment.kind`` (``auto`` chooses from the data):

- ``simclr`` (colour images): random resized crop, horizontal flip, colour jitter (applied
  with probability ``jitter_p``), random grayscale, Gaussian blur; Chen et al. 2020, App. A.
- ``affine`` (small grayscale images such as digits): random affine (rotation, translation,
  scale, shear), Gaussian noise, random erasing. Flips and crops would change a digit's class.
- ``noise`` (feature vectors): Gaussian noise and random feature dropout.

Every set ends by clamping images to [0, 1]. Randomness comes from torch's global generator
(kornia samples from it), so ``torch.manual_seed`` makes the views reproducible, and
:func:`two_views` with ``seed=`` draws them without touching the global state.
"""

from __future__ import annotations

import torch
from torch import nn

from .._optional import needs
from .config import AugmentConfig
from .registry import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "build_augment", "two_views"]


class Clamp01(nn.Module):
    """Clamp to [0, 1] (augmentations such as noise and jitter may leave the range)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


class FeatureNoise(nn.Module):
    """Gaussian noise of std ``std`` plus dropping each feature with probability ``drop``."""

    def __init__(self, std: float, drop: float):
        super().__init__()
        self.std, self.drop = float(std), float(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, D)
        if self.drop > 0:
            x = x * (torch.rand_like(x) >= self.drop)
        return x + self.std * torch.randn_like(x) if self.std > 0 else x


def resolve_kind(kind: str, sample_shape: tuple[int, ...]) -> str:
    """The augmentation set for ``kind`` and one sample's shape (``(C, H, W)`` or ``(D,)``).

    Examples:
        >>> resolve_kind("auto", (1, 8, 8)), resolve_kind("auto", (3, 32, 32)), resolve_kind("auto", (64,))
        ('affine', 'simclr', 'noise')
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment.kind must be one of {AUGMENTATIONS}, got {kind!r}")
    image = len(sample_shape) == 3
    if kind == "auto":
        return "noise" if not image else ("simclr" if sample_shape[0] == 3 else "affine")
    if kind in ("simclr", "affine") and not image:
        raise ValueError(
            f"augment.kind={kind!r} needs (C, H, W) images, the data are vectors {sample_shape}; "
            f"use augment.kind=noise"
        )
    if kind == "simclr" and sample_shape[0] != 3:
        raise ValueError(
            f"augment.kind='simclr' needs RGB images (3 channels), got {sample_shape[0]}; "
            f"use augment.kind=affine for grayscale images"
        )
    return kind


def build_augment(cfg, sample_shape: tuple[int, ...]) -> nn.Module:
    """The augmentation module for an ``AugmentConfig`` and one sample's shape.

    Shape:
        input ``(B, C, H, W)`` floats in [0, 1] (or ``(B, D)``); output the same shape.

    Examples:
        >>> from contrastive.train.recipes.simclr import AugmentConfig
        >>> aug = build_augment(AugmentConfig(), (1, 8, 8))
        >>> _ = torch.manual_seed(0)
        >>> aug(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 1, 8, 8])
    """
    if not isinstance(cfg, AugmentConfig):
        raise TypeError(f"cfg must be an AugmentConfig, got {type(cfg).__name__}")
    kind = resolve_kind(cfg.kind, tuple(sample_shape))
    if kind == "none":
        return nn.Identity()
    if kind == "noise":
        return FeatureNoise(cfg.noise_std, cfg.feature_drop)
    with needs("train", "the augmentations"):
        import kornia.augmentation as K

    size = tuple(sample_shape[1:])
    if kind == "affine":
        ops = [
            K.RandomAffine(
                degrees=cfg.degrees,
                translate=(cfg.translate, cfg.translate),
                scale=(cfg.scale_min, cfg.scale_max),
                shear=cfg.shear or None,
                p=cfg.affine_p,
            )
        ]
        if cfg.noise_p > 0 and cfg.noise_std > 0:
            ops.append(K.RandomGaussianNoise(std=cfg.noise_std, p=cfg.noise_p))
        if cfg.erase_p > 0:
            ops.append(K.RandomErasing(scale=(0.02, cfg.erase_scale_max), p=cfg.erase_p))
    else:  # simclr
        s = cfg.jitter
        kernel = max(3, int(0.1 * size[0]) // 2 * 2 + 1)  # ~10% of the side, odd
        ops = [
            K.RandomResizedCrop(size, scale=(cfg.crop_scale_min, 1.0)),
            K.RandomHorizontalFlip(p=cfg.flip_p),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=cfg.jitter_p),
            K.RandomGrayscale(p=cfg.gray_p),
        ]
        if cfg.blur_p > 0:
            ops.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=cfg.blur_p))
    return nn.Sequential(*ops, Clamp01())


def two_views(aug: nn.Module, x: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of every sample of ``x``.

    Args:
        aug: a module from :func:`build_augment`.
        x: a float batch.
        seed: when given, the views are drawn from this seed without changing the global
            random state; otherwise from the global generator.

    Shape:
        x ``(B, ...)``; returns two tensors ``(B, ...)``, row ``i`` of each from ``x[i]``.

    Examples:
        >>> aug = FeatureNoise(std=0.1, drop=0.0)
        >>> a1, a2 = two_views(aug, torch.zeros(4, 3), seed=1)
        >>> b1, b2 = two_views(aug, torch.zeros(4, 3), seed=1)
        >>> bool(torch.equal(a1, b1)), bool(torch.equal(a1, a2))
        (True, False)
    """
    if not isinstance(aug, nn.Module):
        raise TypeError(f"aug must be an nn.Module (see build_augment), got {type(aug).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating tensor; convert uint8 images with data.to_float(x)")
    if seed is None:
        return aug(x), aug(x)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return aug(x), aug(x)
