"""Datasets for training and evaluation, read from local files only (nothing is downloaded).

Every loader returns a :class:`Dataset`: a train and a test :class:`Split` whose images are
``(N, C, H, W)`` tensors, ``uint8`` (scale 1/255) or ``float32`` in [0, 1], or ``(N, D)``
float vectors, with ``int64`` labels (``-1`` where unlabelled).

- ``digits``: scikit-learn's 1797 8 x 8 digits (embedded in scikit-learn), a fixed
  stratified split.
- ``mnist`` / ``fashion_mnist``: the four IDX files (raw or ``.gz``).
- ``cifar10`` / ``cifar100``: the python pickle batches, unpickled with an allow-list (only
  numpy arrays, lists, dicts and bytes can be built; no arbitrary code runs).
- ``folder``: one subfolder per class of images read with Pillow (``train/`` and ``test/``
  subfolders give the split, else a stratified split is drawn).
- ``npy``: a directory with ``x_train.npy`` (and ``y_train.npy``, ``x_test.npy``,
  ``y_test.npy``) or one ``.npy`` file (labels from ``data.labels``), split when needed.

A missing or malformed file raises ``FileNotFoundError`` or ``ValueError`` saying what was
expected where.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._optional import needs
from .config import DataConfig
from .registry import DATASETS

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "as_samples",
    "channel_stats",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "load_npy",
    "read_array",
    "read_idx",
    "stratified_split",
    "to_float",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Split:
    """One split: ``x`` is ``(N, C, H, W)`` (uint8 or float in [0, 1]) or ``(N, D)``; ``y`` ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.x, torch.Tensor) or self.x.dim() not in (2, 4):
            raise ValueError("Split.x must be a tensor of shape (N, C, H, W) or (N, D)")
        if not isinstance(self.y, torch.Tensor) or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"Split.y must have shape ({self.x.shape[0]},), one label per row of x")

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Dataset:
    """A train and a test split with class names (``classes[k]`` is label ``k``)."""

    name: str
    train: Split
    test: Split
    classes: list[str] = field(default_factory=list)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``(C, H, W)`` or ``(D,)``."""
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]; float tensors are returned as float32.

    Examples:
        >>> to_float(torch.tensor([0, 255], dtype=torch.uint8))
        tensor([0., 1.])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel (images ``(N, C, H, W)``) or per-feature (``(N, D)``) mean and std of data in
    [0, 1] (uint8 is scaled), std clamped to >= 1e-3.

    Examples:
        >>> channel_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        ([1.0, 1.0], [1.0, 0.001])
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4) or len(x) == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, C, H, W) or (N, D)")
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].double()
        if x.dtype == torch.uint8:
            b = b / 255.0
        total += b.sum(dims)
        total_sq += (b * b).sum(dims)
        count += b.numel() // x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split (plain shuffle when ``y`` holds no labels).

    Examples:
        >>> tr, te = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.5, seed=0)
        >>> len(tr), len(te), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[te].tolist())
        (4, 4, [0, 0, 1, 1])
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1), got {test_fraction}; e.g. data.test_fraction=0.25"
        )
    y = np.asarray(y)
    idx = np.arange(len(y))
    if len(y) < 2:
        raise ValueError(f"cannot split {len(y)} sample(s) into train and test; give at least 2")
    with needs("train", "the digits data"):
        from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(y)))
    # stratify when every class can be in both parts; tiny or unlabelled data are shuffled plainly
    labelled = (y >= 0).all() and counts.min() >= 2 and len(classes) <= min(n_test, len(y) - n_test)
    tr, te = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=y if labelled else None
    )
    return np.sort(tr), np.sort(te)


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> tuple[Split, Split]:
    tr, te = stratified_split(y.numpy(), test_fraction, seed)
    return Split(x[tr], y[tr]), Split(x[te], y[te])


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's digits: 1797 gray 8 x 8 images, float32 in [0, 1], stratified split.

    Examples:
        >>> ds = load_digits()
        >>> ds.sample_shape, len(ds.train), len(ds.test), ds.num_classes
        ((1, 8, 8), 1347, 450, 10)
    """
    with needs("train", "the digits data"):
        from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = _split(x, y, test_fraction, seed)
    return Dataset("digits", train, test, [str(k) for k in range(10)])


# ----------------------------------------------------------------------------- IDX (MNIST)
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed (by its ``.gz`` suffix).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a bad magic number, an unknown type code or a size that disagrees with
            the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(
            f"{path}: cannot read it as {'gzip' if opener is gzip.open else 'raw'} IDX ({err})"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file (expected a header 0x00 0x00 <type> <ndim>, got {raw[:4].hex() or 'nothing'}); "
            f"MNIST files are e.g. train-images-idx3-ubyte[.gz]"
        )
    ndim, dtype = raw[3], np.dtype(IDX_DTYPES[raw[2]])
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {head})")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:head], dtype=">u4"))
    want = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - head != want:
        raise ValueError(
            f"{path}: header says shape {dims} ({want} bytes of data) but the file holds {len(raw) - head}; "
            f"the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"expected the IDX file {stem} (or {stem}.gz) in {str(root)!r} (or its raw/ subfolder); "
        f"MNIST and Fashion-MNIST need train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
    )


def load_mnist(root, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files in ``root`` (raw or ``.gz``)."""
    root = _existing_dir(root, name)
    splits = []
    for part in ("train", "t10k"):
        images = read_idx(_find_idx(root, f"{part}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, f"{part}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{root}: {part} images must be (N, H, W) and labels (N,), got {images.shape} and {labels.shape}"
            )
        x = torch.from_numpy(images.astype(np.uint8))[:, None]  # (N, 1, 28, 28)
        splits.append(Split(x, torch.from_numpy(labels.astype(np.int64))))
    classes = FASHION_CLASSES if name == "fashion_mnist" else [str(k) for k in range(10)]
    return Dataset(name, splits[0], splits[1], list(classes))


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# ----------------------------------------------------------------------------- CIFAR
class _SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, dtypes, bytes and builtin containers; anything else is refused."""

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core", "numpy._core", 1)
        return getattr(importlib.import_module(module), name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"expected the CIFAR batch {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise ValueError(f"{path}: not a CIFAR python pickle batch ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and labels, got {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_split(path: Path, label_key: str) -> Split:
    batch = _unpickle(path)
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path}: expected keys b'data' and b'{label_key}', found {sorted(batch)}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or len(labels) != len(data):
        raise ValueError(
            f"{path}: b'data' must be uint8 of shape (N, 3072) with N labels, got {data.dtype} "
            f"{data.shape} and {labels.shape[0]} labels"
        )
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # (N, 3, 32, 32) uint8
    return Split(x, torch.from_numpy(labels))


def load_cifar(root, num_classes: int = 10) -> Dataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) pickles.

    ``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or
    its parent.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    root = _existing_dir(root, f"cifar{num_classes}")
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if (root / sub).is_dir():
        root = root / sub
    if num_classes == 10:
        parts = [_cifar_split(root / f"data_batch_{k}", "labels") for k in range(1, 6)]
        train = Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
        test = _cifar_split(root / "test_batch", "labels")
        meta, names_key = root / "batches.meta", "label_names"
    else:
        train = _cifar_split(root / "train", "fine_labels")
        test = _cifar_split(root / "test", "fine_labels")
        meta, names_key = root / "meta", "fine_label_names"
    classes = [str(k) for k in range(num_classes)]
    if meta.is_file():
        names = _unpickle(meta).get(names_key)
        if names is not None and len(names) == num_classes:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return Dataset(f"cifar{num_classes}", train, test, classes)


# ----------------------------------------------------------------------------- image folders
def _existing_dir(root, what: str) -> Path:
    if root in (None, ""):
        raise ValueError(f"the {what} dataset needs a folder: pass --data.path=/path/to/{what}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{what}: folder {str(root)!r} not found; pass an existing folder to --data.path"
        )
    return root


def _read_classes(root: Path, classes: list[str] | None, size: int, channels: int):
    with needs("train", "reading images"):
        from PIL import Image, UnidentifiedImageError

    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise ValueError(f"{root}: expected one subfolder per class (e.g. {root}/cat/001.png), found none")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = (
            sorted(f for f in (root / name).glob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if (root / name).is_dir()
            else []
        )
        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
                    images.append(im.copy())
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{f}: not a readable image ({err})") from None
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class subfolders {classes}")
    if channels == 0:
        channels = 1 if all(im.mode in ("1", "L", "I", "I;16", "F") for im in images) else 3
    arrays = []
    for im in images:
        im = im.convert("L" if channels == 1 else "RGB")
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], channels))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"{root}: images have different sizes {sorted(shapes)[:3]}...; pass --data.image_size=N to resize"
        )
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
    return x, torch.tensor(labels, dtype=torch.int64), classes, channels


def load_image_folder(
    root, image_size: int = 0, channels: int = 0, test_fraction: float = 0.25, seed: int = 0
) -> Dataset:
    """Images in ``root/<class>/*`` (or ``root/train/<class>`` and ``root/test/<class>``).

    Args:
        root: the folder.
        image_size: resize every image to ``image_size`` x ``image_size`` (0 keeps the size,
            which must then be the same for all).
        channels: 1 (gray), 3 (RGB) or 0 (gray when every image is).
        test_fraction: held-out share when there is no ``test/`` subfolder.
        seed: seed of that split.
    """
    root = _existing_dir(root, "folder")
    if channels not in (0, 1, 3):
        raise ValueError(f"channels must be 0 (auto), 1 or 3, got {channels}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes, ch = _read_classes(root / "train", None, image_size, channels)
        xt, yt, _, _ = _read_classes(root / "test", classes, image_size, ch)
        if xt.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{root}: train images are {tuple(x.shape[1:])}, test images {tuple(xt.shape[1:])}; "
                f"pass --data.image_size=N"
            )
        return Dataset("folder", Split(x, y), Split(xt, yt), classes)
    x, y, classes, _ = _read_classes(root, None, image_size, channels)
    train, test = _split(x, y, test_fraction, seed)
    return Dataset("folder", train, test, classes)


# ----------------------------------------------------------------------------- .npy arrays
def read_array(path: Path) -> np.ndarray:
    """A plain ``.npy`` array (no pickled objects).

    Args:
        path: the ``.npy`` file.

    Returns:
        The array as saved.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a plain ``.npy`` array (e.g. it holds pickled objects).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "x.npy"
        >>> np.save(f, np.arange(3))
        >>> read_array(f)
        array([0, 1, 2])
    """
    if not path.is_file():
        raise FileNotFoundError(f"expected the array file {str(path)!r}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a plain .npy array ({err})") from None


def as_samples(arr: np.ndarray, where: Path) -> torch.Tensor:
    """Samples as the models take them: ``(N, D)`` vectors, or images as ``(N, C, H, W)``.

    ``(N, H, W)`` gains a channel axis; ``(N, H, W, C)`` with ``C`` in {1, 3} is permuted to
    ``(N, C, H, W)``. ``uint8`` stays ``uint8`` (pixels); any other number type becomes
    ``float32`` and must be finite.

    Args:
        arr: the array, ``(N, D)``, ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``.
        where: the file it came from, named in error messages.

    Returns:
        The samples as a tensor.

    Raises:
        ValueError: another rank or a non-numeric type; NaN or Inf in a float array.

    Example:
        >>> as_samples(np.zeros((5, 8, 8, 3), dtype=np.uint8), Path("x.npy")).shape
        torch.Size([5, 3, 8, 8])
    """
    if arr.ndim not in (2, 3, 4) or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(
            f"{where}: expected numbers of shape (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C), "
            f"got {arr.dtype} {arr.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.dtype != torch.uint8:
        x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: contains NaN or Inf")
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return x


def _labels(path: Path | None, n: int) -> torch.Tensor:
    if path is None:
        return torch.full((n,), -1, dtype=torch.int64)
    y = read_array(path)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: expected {n} integer labels of shape ({n},), got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def load_npy(path, labels: str = "", test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Arrays from ``.npy`` files (``allow_pickle=False``).

    ``path`` is a directory with ``x_train.npy`` and optionally ``y_train.npy``,
    ``x_test.npy``, ``y_test.npy``; or a single ``.npy`` file with optional ``labels`` file,
    split with ``test_fraction``. uint8 arrays are images in 0..255; float arrays are used as
    they are.
    """
    if path in (None, ""):
        raise ValueError("the npy dataset needs --data.path=DIR (with x_train.npy) or --data.path=FILE.npy")
    path = Path(path)
    if path.is_dir():
        x = as_samples(read_array(path / "x_train.npy"), path / "x_train.npy")
        ytr = path / "y_train.npy"
        train = Split(x, _labels(ytr if ytr.exists() else None, len(x)))
        if (path / "x_test.npy").exists():
            xt = as_samples(read_array(path / "x_test.npy"), path / "x_test.npy")
            if xt.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"{path}: x_test samples are {tuple(xt.shape[1:])}, x_train {tuple(x.shape[1:])}"
                )
            yte = path / "y_test.npy"
            return Dataset(
                "npy",
                train,
                Split(xt, _labels(yte if yte.exists() else None, len(xt))),
                _class_names(train.y),
            )
        tr, te = _split(train.x, train.y, test_fraction, seed)
        return Dataset("npy", tr, te, _class_names(train.y))
    x = as_samples(read_array(path), path)
    y = _labels(Path(labels) if labels else None, len(x))
    tr, te = _split(x, y, test_fraction, seed)
    return Dataset("npy", tr, te, _class_names(y))


def _class_names(y: torch.Tensor) -> list[str]:
    return [str(k) for k in range(int(y.max()) + 1)] if len(y) and int(y.max()) >= 0 else []


# ----------------------------------------------------------------------------- dispatch
def _subsample(split: Split, limit: int, seed: int) -> Split:
    if not limit or limit >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    return Split(split.x[idx], split.y[idx])


def load_dataset(cfg) -> Dataset:
    """Load the dataset a ``DataConfig`` names (see the module docstring for the layouts)."""
    if not isinstance(cfg, DataConfig):
        raise TypeError(
            f"cfg must be a DataConfig (e.g. DataConfig(name='digits')), got {type(cfg).__name__}"
        )
    name = cfg.name
    path = os.path.expanduser(cfg.path) if cfg.path else ""
    if name == "digits":
        ds = load_digits(cfg.test_fraction, cfg.split_seed)
    elif name in ("mnist", "fashion_mnist"):
        ds = load_mnist(path, name)
    elif name in ("cifar10", "cifar100"):
        ds = load_cifar(path, 10 if name == "cifar10" else 100)
    elif name == "folder":
        ds = load_image_folder(path, cfg.image_size, cfg.channels, cfg.test_fraction, cfg.split_seed)
    elif name == "npy":
        labels = os.path.expanduser(cfg.labels) if cfg.labels else ""
        ds = load_npy(path, labels, cfg.test_fraction, cfg.split_seed)
    else:
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}")
    ds.train = _subsample(ds.train, cfg.train_limit, cfg.split_seed)
    ds.test = _subsample(ds.test, cfg.test_limit, cfg.split_seed + 1)
    return ds
