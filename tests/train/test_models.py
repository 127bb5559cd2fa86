"""Encoders and the projection head: output shapes, normalisation, configuration errors."""

from __future__ import annotations

import pytest
import torch

from contrastive.train.config import ModelConfig
from contrastive.train.models import Normalize, ProjectionHead, build_encoder, build_model, resnet18_cifar


@pytest.mark.parametrize(
    "encoder, shape, dim",
    [
        ("mlp", (1, 8, 8), 32),
        ("mlp", (12,), 32),
        ("cnn", (1, 8, 8), 16),
        ("cnn", (3, 12, 12), 16),
        ("auto", (1, 8, 8), 16),
        ("resnet18", (3, 16, 16), 32),
    ],
)
def test_encoder_shapes(encoder, shape, dim):
    cfg = ModelConfig(encoder=encoder, width=4, mlp_hidden=32, proj_dim=5)
    c = shape[0] if len(shape) == 3 else shape[0]
    model = build_model(cfg, shape, [0.5] * c, [0.2] * c)
    h, z = model(torch.rand(3, *shape))
    assert h.shape == (3, dim) and z.shape == (3, 5) and model.encoder.feature_dim == dim


def test_resnet18_is_resnet18():
    net = resnet18_cifar(3)
    n_params = sum(p.numel() for p in net.parameters())
    assert 11.0e6 < n_params < 11.3e6  # ResNet-18 without its classifier: 11.17M
    assert net.stem[0].kernel_size == (3, 3) and net.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


def test_normalize_and_head():
    norm = Normalize([0.5, 0.0], [0.5, 2.0])
    out = norm(torch.ones(1, 2, 3, 3))
    assert torch.allclose(out[0, 0], torch.ones(3, 3)) and torch.allclose(out[0, 1], torch.full((3, 3), 0.5))
    assert torch.allclose(norm(torch.ones(4, 2)), torch.tensor([[1.0, 0.5]] * 4))
    head = ProjectionHead(6, 7, 3)
    assert head(torch.randn(4, 6)).shape == (4, 3)
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.0], [0.0])


def test_encoder_errors():
    with pytest.raises(ValueError, match="needs \\(C, H, W\\) images"):
        build_encoder(ModelConfig(encoder="cnn"), (12,), [0.0] * 12, [1.0] * 12)
    with pytest.raises(ValueError, match="at least 4 x 4"):
        build_encoder(ModelConfig(encoder="cnn"), (1, 2, 2), [0.0], [1.0])


def test_builders_check_their_config():
    from contrastive.train.augment import build_augment
    from contrastive.train.data import load_dataset
    from contrastive.train.optim import build_optimizer

    with pytest.raises(TypeError, match="model config"):
        build_encoder({"encoder": "cnn"}, (1, 8, 8), [0.0], [1.0])
    with pytest.raises(TypeError, match="DataConfig"):
        load_dataset("digits")
    with pytest.raises(TypeError, match="AugmentConfig"):
        build_augment(None, (1, 8, 8))
    with pytest.raises(TypeError, match="OptimConfig"):
        build_optimizer("sgd", torch.nn.Linear(2, 2))
