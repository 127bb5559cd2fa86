"""Encoders f_theta and SimCLR's projection head g.

The encoder maps raw inputs in [0, 1] to representations ``h`` (``(N, feature_dim)``): it
starts with a :class:`Normalize` layer holding the training set's per-channel mean and std
as buffers, so a saved encoder embeds raw images without extra preprocessing. The head maps
``h`` to the ``z`` the loss sees; evaluation uses ``h`` (Chen et al. 2020, Sec. 4.2).

- :class:`MLP`: for feature vectors or tiny images (flattened).
- :class:`SmallCNN`: five 3 x 3 conv-BN-ReLU layers, two max-pools, global average pooling.
- :func:`resnet18_cifar`: ResNet-18 with the CIFAR stem (3 x 3 conv, stride 1, no max-pool).
- your own: ``model.encoder = "python:package.module:factory"``, ``factory(sample_shape,
  embed_dim) -> nn.Module`` (see :func:`build_encoder`), or a module or factory passed from
  Python (``train(cfg, encoder=...)``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .registry import ENCODERS, OBJECT, PYTHON, check_encoder_name

__all__ = [
    "ENCODERS",
    "Encoder",
    "MLP",
    "Normalize",
    "ProjectionHead",
    "SimCLRModel",
    "SmallCNN",
    "build_encoder",
    "build_model",
    "check_encoder_name",
    "encoder_spec",
    "import_factory",
    "resnet18_cifar",
]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (images) or per feature (vectors); buffers, not trained.

    Examples:
        >>> Normalize([0.5], [0.25])(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(
                f"mean and std must be 1-D of one length, got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError("std must be positive everywhere; clamp it, e.g. std.clamp_min(1e-3)")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class MLP(nn.Sequential):
    """Flatten, then ``depth`` x (Linear, BatchNorm, ReLU); ``feature_dim = hidden``."""

    def __init__(self, in_features: int, hidden: int = 512, depth: int = 2):
        if in_features < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"in_features, hidden and depth must be >= 1, got {in_features}, {hidden}, {depth}"
            )
        layers = [nn.Flatten()]
        for k in range(depth):
            layers += [
                nn.Linear(in_features if k == 0 else hidden, hidden, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)
        self.feature_dim = hidden


class SmallCNN(nn.Sequential):
    """Conv widths ``w, w | 2w, 2w | 4w`` with a max-pool after each pair; ``feature_dim = 4w``.

    Examples:
        >>> SmallCNN(1, width=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 32])
    """

    def __init__(self, in_channels: int, width: int = 32):
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels} and {width}")
        w = width
        super().__init__(
            _conv_bn(in_channels, w),
            _conv_bn(w, w),
            nn.MaxPool2d(2),  # (N, w, H/2, W/2)
            _conv_bn(w, 2 * w),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # (N, 2w, H/4, W/4)
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, 4w)
        )
        self.feature_dim = 4 * w


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 x 3 convolutions and a (projected when needed) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with the CIFAR stem; ``feature_dim = 8 * width``."""

    def __init__(self, in_channels: int, blocks: tuple[int, ...] = (2, 2, 2, 2), width: int = 64):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels} and {width}")
        self.stem = _conv_bn(in_channels, width)  # 3 x 3, stride 1, no max-pool
        layers, cin = [], width
        for stage, n in enumerate(blocks):
            cout = width * 2**stage
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, 8 width)
        return self.pool(self.layers(self.stem(x)))


def resnet18_cifar(in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18 for 32 x 32 inputs (He et al. 2016; CIFAR variant as in SimCLR, App. B.9).

    Examples:
        >>> resnet18_cifar(3, width=4)(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 32])
    """
    return ResNet(in_channels, (2, 2, 2, 2), width)


class Encoder(nn.Module):
    """``Normalize`` then a backbone; ``feature_dim`` is the size of ``h``."""

    def __init__(self, normalize: Normalize, backbone: nn.Module, feature_dim: int | None = None):
        super().__init__()
        self.normalize, self.backbone = normalize, backbone
        self.feature_dim = int(backbone.feature_dim if feature_dim is None else feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (N, feature_dim)
        return self.backbone(self.normalize(x))


class ProjectionHead(nn.Sequential):
    """SimCLR's head g: Linear, BatchNorm, ReLU, Linear (``in_dim -> hidden -> out_dim``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        if min(in_dim, hidden, out_dim) < 1:
            raise ValueError(f"head sizes must be >= 1, got in={in_dim}, hidden={hidden}, out={out_dim}")
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )


class SimCLRModel(nn.Module):
    """Encoder f and head g; ``forward`` returns ``(h, z)``, ``(N, feature_dim)`` and ``(N, out_dim)``."""

    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.head(h)


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable that ``python:package.module:factory`` names (imported now).

    Raises:
        ImportError: the module cannot be imported (the message says to put its folder on
            ``PYTHONPATH``).
        ValueError: the module has no such attribute, or it is not callable.

    Examples:
        >>> import_factory("python:contrastive.train.models:resnet18_cifar").__name__
        'resnet18_cifar'
    """
    check_encoder_name(spec)
    if not spec.startswith(PYTHON):
        raise ValueError(f"spec must start with {PYTHON!r}, got {spec!r}")
    module_name, _, attr = spec[len(PYTHON) :].partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"model.encoder={spec!r}: cannot import {module_name!r} ({err}); put the folder that "
            f"holds it on PYTHONPATH (or install its package)"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model.encoder={spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model.encoder={spec!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def encoder_spec(encoder: Any) -> str:
    """What a run records in ``model.encoder`` for an encoder passed from Python: the import
    path of a factory that can be imported back (``python:module:qualname``), else
    ``object:module.qualname`` (the encoder must then be passed again to resume or evaluate).

    Examples:
        >>> encoder_spec(resnet18_cifar)
        'python:contrastive.train.models:resnet18_cifar'
        >>> encoder_spec(nn.Linear(2, 2))
        'object:torch.nn.modules.linear.Linear'
    """
    if isinstance(encoder, nn.Module):
        return f"{OBJECT}{type(encoder).__module__}.{type(encoder).__qualname__}"
    if not callable(encoder):
        raise TypeError(
            f"encoder must be an nn.Module or a factory(sample_shape, embed_dim) -> nn.Module, "
            f"got {type(encoder).__name__}"
        )
    module, qualname = getattr(encoder, "__module__", None), getattr(encoder, "__qualname__", "")
    spec = f"{PYTHON}{module}:{qualname}"
    try:
        if module and module != "__main__" and import_factory(spec) is encoder:
            return spec
    except (ImportError, ValueError):
        pass
    return f"{OBJECT}{module}.{qualname}"


def _user_encoder(encoder: Any, spec: str, shape: tuple[int, ...], embed_dim: int, mean, std) -> Encoder:
    """Normalize + the user's module (built by the factory when ``encoder`` is one); its output
    size is checked on two zero samples (eval mode, no gradient, random state untouched)."""
    if isinstance(encoder, nn.Module):
        module, want = encoder, None
    else:
        module, want = encoder(tuple(shape), int(embed_dim)), int(embed_dim)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"model.encoder={spec!r}: the factory must return an nn.Module, got {type(module).__name__}"
            )
    params = next(iter(module.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    normalize = Normalize(mean, std).to(device)
    was = module.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            module.eval()
            out = module(normalize(torch.zeros(2, *shape, device=device)))
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward on the data's shape
        raise ValueError(
            f"model.encoder={spec!r}: the module failed on a batch of shape {(2, *shape)} "
            f"({type(err).__name__}: {err}); it must map (N, {', '.join(map(str, shape))}) to "
            f"(N, {want or 'd'})"
        ) from None
    finally:
        module.train(was)
    if (
        not isinstance(out, torch.Tensor)
        or out.dim() != 2
        or len(out) != 2
        or (want is not None and out.shape[1] != want)
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model.encoder={spec!r}: the module maps a batch of shape {(2, *shape)} to {got}; it must "
            f"return one (N, {want or 'd'}) tensor (the factory receives embed_dim={embed_dim})"
        )
    return Encoder(normalize, module, feature_dim=out.shape[1])


def build_encoder(
    cfg, sample_shape: tuple[int, ...], mean: Sequence[float], std: Sequence[float], encoder: Any = None
) -> Encoder:
    """The encoder a ``ModelConfig`` names, for samples of ``sample_shape`` (``(C, H, W)`` or ``(D,)``).

    Your own network: ``model.encoder = "python:package.module:factory"`` imports ``factory``
    and calls ``factory(sample_shape, cfg.embed_dim)``, which must return an ``nn.Module``
    mapping ``(N, *sample_shape)`` to ``(N, embed_dim)``; ``encoder`` (a factory or a module
    passed from Python) takes precedence over ``cfg.encoder``. Either way the module is put
    after a :class:`Normalize` layer, so it receives standardised inputs.

    Examples:
        >>> from contrastive.train.recipes.simclr import ModelConfig
        >>> enc = build_encoder(ModelConfig(encoder="mlp", mlp_hidden=16), (1, 8, 8), [0.3], [0.4])
        >>> enc(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 16])
        >>> def make(shape, dim):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(64, dim))
        >>> build_encoder(ModelConfig(embed_dim=5), (1, 8, 8), [0.3], [0.4], encoder=make)(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 5])
    """
    missing = [k for k in ("encoder", "width", "mlp_hidden", "mlp_depth") if not hasattr(cfg, k)]
    if missing:  # any model config with these fields (SimCLR's ModelConfig, the siamese one)
        raise TypeError(
            f"cfg must be a model config with fields encoder, width, mlp_hidden and mlp_depth; "
            f"{type(cfg).__name__} lacks {missing}"
        )
    if len(tuple(sample_shape)) not in (1, 3):
        raise ValueError(f"sample_shape must be (C, H, W) or (D,), got {tuple(sample_shape)}")
    name, shape = cfg.encoder, tuple(sample_shape)
    check_encoder_name(name)
    if encoder is None and name.startswith(OBJECT):
        raise ValueError(
            f"model.encoder={name!r}: this run's encoder was passed from Python as a module; pass it "
            f"again (train(cfg, resume, encoder=...), evaluate_run(run, encoder=...), load_encoder(run, "
            f"encoder=...)), or train with a factory importable as python:package.module:factory"
        )
    if encoder is None and name.startswith(PYTHON):
        encoder = import_factory(name)
    if encoder is not None:
        return _user_encoder(encoder, name, shape, getattr(cfg, "embed_dim", 128), mean, std)
    image = len(shape) == 3
    if name == "auto":
        name = "cnn" if image else "mlp"
    if name in ("cnn", "resnet18") and not image:
        raise ValueError(
            f"model.encoder={name!r} needs (C, H, W) images, the data are vectors {shape}; use mlp"
        )
    if name == "mlp":
        numel = int(torch.tensor(shape).prod())
        backbone: nn.Module = MLP(numel, cfg.mlp_hidden, cfg.mlp_depth)
    elif name == "cnn":
        if min(shape[1:]) < 4:
            raise ValueError(f"the cnn encoder needs images of at least 4 x 4, got {shape[1:]}; use mlp")
        backbone = SmallCNN(shape[0], cfg.width)
    else:
        backbone = resnet18_cifar(shape[0], cfg.width)
    return Encoder(Normalize(mean, std), backbone)


def build_model(cfg, sample_shape, mean, std, encoder: Any = None) -> SimCLRModel:
    """Encoder plus projection head (``proj_hidden = 0`` means the encoder's feature size);
    ``encoder`` as in :func:`build_encoder`."""
    encoder = build_encoder(cfg, sample_shape, mean, std, encoder)
    hidden = cfg.proj_hidden or encoder.feature_dim
    return SimCLRModel(encoder, ProjectionHead(encoder.feature_dim, hidden, cfg.proj_dim))
