"""Loaders on small files written here: IDX (raw and gz), CIFAR pickles, image folders, .npy,
the errors malformed or missing files raise, and the per-channel statistics."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from contrastive.train import data
from contrastive.train.config import DataConfig
from contrastive.train.data import channel_stats


def write_idx(path, array: np.ndarray, gz: bool = False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    head = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(head + body)


def write_mnist(root, gz: bool, n_train=12, n_test=6, size=5):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            root / f"{part}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, size, size), dtype=np.uint8), gz
        )
        write_idx(root / f"{part}-labels-idx1-ubyte{sfx}", (np.arange(n) % 10).astype(np.uint8), gz)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    for arr in (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([[1, -2], [3, 4]], dtype=np.int32),
        np.linspace(0, 1, 6, dtype=np.float32),
    ):
        path = tmp_path / ("a.idx.gz" if gz else "a.idx")
        write_idx(path, arr, gz)
        out = data.read_idx(path)
        assert out.dtype == arr.dtype and np.array_equal(out, arr)


def test_read_idx_malformed(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    write_idx(bad, np.zeros((4, 3), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(bad)
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        data.read_idx(gz)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz)
    ds = data.load_mnist(tmp_path / "mnist")
    assert ds.train.x.shape == (12, 1, 5, 5) and ds.train.x.dtype == torch.uint8
    assert ds.test.x.shape == (6, 1, 5, 5) and ds.train.y.tolist() == [k % 10 for k in range(12)]
    fashion = data.load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path / "mnist")))
    assert fashion.classes[0] == "T-shirt/top" and len(fashion.train) == 12


def test_mnist_missing_and_mismatched(tmp_path):
    write_mnist(tmp_path / "m", gz=False)
    os.remove(tmp_path / "m" / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels"):
        data.load_mnist(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="--data.path"):
        data.load_mnist(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="--data.path"):
        data.load_dataset(DataConfig(name="mnist"))


def write_cifar(root, num_classes: int, n=4):
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)

    def batch(k, key):
        return {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key: [int(v) for v in rng.integers(0, num_classes, n)],
            b"batch_label": f"b{k}".encode(),
        }

    if num_classes == 10:
        for k in range(1, 6):
            pickle.dump(batch(k, b"labels"), open(root / f"data_batch_{k}", "wb"), protocol=2)
        pickle.dump(batch(6, b"labels"), open(root / "test_batch", "wb"))
        pickle.dump(
            {b"label_names": [f"c{k}".encode() for k in range(10)]}, open(root / "batches.meta", "wb")
        )
    else:
        pickle.dump(batch(0, b"fine_labels"), open(root / "train", "wb"), protocol=5)
        pickle.dump(batch(1, b"fine_labels"), open(root / "test", "wb"))
        pickle.dump({b"fine_label_names": [f"f{k}".encode() for k in range(100)]}, open(root / "meta", "wb"))


def test_cifar10_and_100(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", 10)
    ds = data.load_cifar(tmp_path, 10)  # the parent folder works too
    assert ds.train.x.shape == (20, 3, 32, 32) and ds.test.x.shape == (4, 3, 32, 32)
    assert ds.classes[3] == "c3" and ds.train.x.dtype == torch.uint8
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"))
    assert torch.equal(ds.train.x[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))
    write_cifar(tmp_path / "c100", 100)
    ds = data.load_dataset(DataConfig(name="cifar100", path=str(tmp_path / "c100")))
    assert len(ds.train) == 4 and ds.num_classes == 100 and ds.classes[99] == "f99"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_malformed_and_unsafe(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    write_cifar(root, 10)
    pickle.dump({b"data": Evil(), b"labels": [0]}, open(root / "data_batch_2", "wb"))
    with pytest.raises(ValueError, match="refusing to load"):
        data.load_cifar(root, 10)
    pickle.dump(
        {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, open(root / "data_batch_2", "wb")
    )
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        data.load_cifar(root, 10)
    (root / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a CIFAR python pickle"):
        data.load_cifar(root, 10)
    os.remove(root / "data_batch_2")
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        data.load_cifar(root, 10)


def write_images(folder, classes, n, size=(6, 6), mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / c / f"{k}.png")


def test_image_folder_split_and_layouts(tmp_path):
    write_images(tmp_path / "flat", ["cat", "dog"], 4)
    ds = data.load_image_folder(tmp_path / "flat", test_fraction=0.5)
    assert ds.classes == ["cat", "dog"] and ds.train.x.shape == (4, 3, 6, 6) and len(ds.test) == 4
    assert sorted(ds.test.y.tolist()) == [0, 0, 1, 1]  # stratified

    write_images(tmp_path / "split" / "train", ["a", "b"], 3, mode="L")
    write_images(tmp_path / "split" / "test", ["a", "b"], 1, mode="L")
    ds = data.load_dataset(DataConfig(name="folder", path=str(tmp_path / "split"), image_size=4))
    assert ds.train.x.shape == (6, 1, 4, 4) and ds.test.x.shape == (2, 1, 4, 4)


def test_image_folder_errors(tmp_path):
    write_images(tmp_path / "mixed", ["a"], 2, size=(6, 6))
    write_images(tmp_path / "mixed", ["b"], 2, size=(8, 5))
    with pytest.raises(ValueError, match="--data.image_size"):
        data.load_image_folder(tmp_path / "mixed")
    assert data.load_image_folder(tmp_path / "mixed", image_size=5).train.x.shape[1:] == (3, 5, 5)
    (tmp_path / "mixed" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        data.load_image_folder(tmp_path / "mixed", image_size=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="one subfolder per class"):
        data.load_image_folder(tmp_path / "empty")


def test_npy_directory_and_file(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "arrays"
    d.mkdir()
    np.save(d / "x_train.npy", rng.integers(0, 256, (10, 7, 7, 3), dtype=np.uint8))  # NHWC
    np.save(d / "y_train.npy", np.arange(10) % 2)
    np.save(d / "x_test.npy", rng.integers(0, 256, (4, 7, 7, 3), dtype=np.uint8))
    np.save(d / "y_test.npy", np.arange(4) % 2)
    ds = data.load_npy(d)
    assert ds.train.x.shape == (10, 3, 7, 7) and ds.test.y.tolist() == [0, 1, 0, 1]

    vec = tmp_path / "vec.npy"
    np.save(vec, rng.normal(size=(20, 5)).astype(np.float32))
    np.save(tmp_path / "lab.npy", np.arange(20) % 4)
    ds = data.load_dataset(
        DataConfig(name="npy", path=str(vec), labels=str(tmp_path / "lab.npy"), test_fraction=0.2)
    )
    assert ds.sample_shape == (5,) and len(ds.test) == 4 and ds.num_classes == 4
    unlabelled = data.load_npy(vec)
    assert bool((unlabelled.train.y == -1).all())


def test_npy_errors(tmp_path):
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain .npy array"):
        data.load_npy(obj)
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((6, 2, 2)))
    np.save(tmp_path / "y.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected 6 integer labels"):
        data.load_npy(arr, labels=str(tmp_path / "y.npy"))
    np.save(arr, np.array([[np.nan, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        data.load_npy(arr)
    np.save(arr, np.zeros(5))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        data.load_npy(arr)
    (tmp_path / "dir").mkdir()
    with pytest.raises(FileNotFoundError, match="x_train.npy"):
        data.load_npy(tmp_path / "dir")


def test_digits_split_is_fixed_and_stratified():
    a, b = data.load_digits(), data.load_digits()
    assert torch.equal(a.test.x, b.test.x) and len(a.train) == 1347 and len(a.test) == 450
    counts = torch.bincount(a.test.y)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 46  # 25% of 174..183 per class
    assert float(a.train.x.max()) == 1.0 and float(a.train.x.min()) == 0.0


def test_limits_and_to_float():
    ds = data.load_dataset(DataConfig(train_limit=50, test_limit=20))
    assert len(ds.train) == 50 and len(ds.test) == 20
    assert data.to_float(torch.tensor([51], dtype=torch.uint8)).item() == pytest.approx(0.2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        data.to_float([1, 2])


@pytest.mark.parametrize("chunk", [3, 4096])
def test_channel_stats_of_images_and_vectors(chunk):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 4, 4, generator=g, dtype=torch.float64)
    mean, std = channel_stats(x, chunk=chunk)
    np.testing.assert_allclose(mean, x.mean((0, 2, 3)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, x.std((0, 2, 3), unbiased=False).numpy(), rtol=1e-10)
    u8 = (x * 255).round().to(torch.uint8)
    np.testing.assert_allclose(
        channel_stats(u8, chunk=chunk)[0], (u8.double() / 255).mean((0, 2, 3)).numpy(), rtol=1e-12
    )
    v = torch.rand(7, 5, generator=g)
    np.testing.assert_allclose(channel_stats(v, chunk=chunk)[0], v.double().mean(0).numpy(), rtol=1e-6)
    assert channel_stats(torch.ones(4, 2))[1] == [1e-3, 1e-3]  # a constant channel: std clamped


@pytest.mark.parametrize("bad", [torch.zeros(0, 3), torch.zeros(3), torch.zeros(2, 3, 4), [[0.0]]])
def test_channel_stats_bad_input(bad):
    with pytest.raises(ValueError, match=r"x must be a non-empty tensor of shape \(N, C, H, W\) or \(N, D\)"):
        channel_stats(bad)
