"""Datasets: tiny ImageFolders on disk, a fake MNIST in torchvision's own format, resizing,
grayscale to 3 channels, stratified seeded splits, caps, augmentation, and clear offline errors."""
from __future__ import annotations

import gzip
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from evoprune import ConfigError
from evoprune.config import DataConfig
from evoprune.data.sources import DatasetUnavailable
from evoprune.data.task import augment_batch, load_data, stratified_take


def make_imagefolder(root: Path, classes: int = 3, per_class: int = 10, size=(12, 10), mode: str = "RGB",
                     seed: int = 0, sizes=None) -> Path:
    """`root/<class>/<i>.png` with random pixels; a class's images are brighter the higher its index."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)] if sizes else size
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            pixels = rng.integers(0, 100, shape) + 50 * c
            Image.fromarray(pixels.astype(np.uint8), mode).save(root / f"class_{c}" / f"{i}.png")
    return root


def test_flat_imagefolder_is_split_stratified_and_normalised(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", classes=3, per_class=10)
    data = load_data(DataConfig(name="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.2), seed=0)
    assert data.input_shape == (3, 10, 12) and data.n_classes == 3
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (18, 6, 6)
    for y in (data.train_y, data.val_y, data.test_y):
        assert torch.bincount(y, minlength=3).tolist() == [len(y) // 3] * 3  # stratified
    mean = data.train_x.mean((0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)  # per-channel statistics of train
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    again = load_data(DataConfig(name="imagefolder", root=str(root)), seed=0)
    assert torch.equal(again.val_x, data.val_x)  # seeded
    other = load_data(DataConfig(name="imagefolder", root=str(root)), seed=1)
    assert not torch.equal(other.val_y, data.val_y) or not torch.equal(other.val_x, data.val_x)


def test_train_val_test_folders_are_used_as_given(tmp_path):
    root = tmp_path / "imgs"
    make_imagefolder(root / "train", per_class=8, seed=0)
    make_imagefolder(root / "val", per_class=2, seed=1)
    make_imagefolder(root / "test", per_class=3, seed=2)
    data = load_data(DataConfig(name="imagefolder", root=str(root)), seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (24, 6, 9)


def test_missing_val_folder_is_carved_from_train(tmp_path):
    root = tmp_path / "imgs"
    make_imagefolder(root / "train", per_class=10)
    make_imagefolder(root / "test", per_class=2, seed=3)
    data = load_data(DataConfig(name="imagefolder", root=str(root), val_fraction=0.2), seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (24, 6, 6)


def test_a_val_class_that_train_lacks_is_an_error(tmp_path):
    root = tmp_path / "imgs"
    make_imagefolder(root / "train", classes=2, per_class=10)
    make_imagefolder(root / "val", classes=3, per_class=2)
    with pytest.raises(ConfigError, match="val/ has classes that train/ lacks: class_2"):
        load_data(DataConfig(name="imagefolder", root=str(root)), seed=0)


def test_grayscale_is_one_channel_or_repeated_to_three(tmp_path):
    root = make_imagefolder(tmp_path / "gray", mode="L")
    cfg = DataConfig(name="imagefolder", root=str(root))
    assert load_data(cfg, seed=0).input_shape == (1, 10, 12)
    data = load_data(cfg, seed=0, channels=3)
    assert data.input_shape == (3, 10, 12)
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2]) and data.train_x.stride(1) == 0  # a view
    assert data.example_input(2).shape == (2, 3, 10, 12)
    rgb = make_imagefolder(tmp_path / "rgb")
    with pytest.raises(ConfigError, match="data.name"):
        load_data(DataConfig(name="imagefolder", root=str(rgb)), seed=0, channels=1)


def test_image_size_resizes_mixed_sizes_and_is_required_for_them(tmp_path):
    root = make_imagefolder(tmp_path / "mixed", sizes=[(12, 10), (20, 14), (9, 9)])
    with pytest.raises(ConfigError, match="data.root.*different sizes.*data.image_size"):
        load_data(DataConfig(name="imagefolder", root=str(root)), seed=0)
    data = load_data(DataConfig(name="imagefolder", root=str(root), image_size=8), seed=0)
    assert data.input_shape == (3, 8, 8)


def test_digits_resized_for_a_cifar_parent():
    data = load_data(DataConfig(image_size=32), seed=0, channels=3)
    assert data.input_shape == (3, 32, 32) and data.n_classes == 10
    assert data.describe()["input_shape"] == [3, 32, 32] and data.augment == "none"
    native = load_data(DataConfig(), seed=0)
    assert native.input_shape == (1, 8, 8) and torch.equal(native.train_y, data.train_y)


def test_load_task_gives_a_torchvision_parent_three_channels():
    from evoprune import load_config
    from evoprune.data.task import load_task

    assert load_task(load_config(overrides=["parent.arch=resnet18", "data.image_size=16"])).input_shape == (3, 16, 16)
    assert load_task(load_config(overrides=["parent.arch=resnet20"])).input_shape == (1, 8, 8)


def test_caps_keep_every_class():
    data = load_data(DataConfig(max_train_samples=50, max_eval_samples=20), seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (50, 20, 20)
    assert torch.bincount(data.train_y, minlength=10).min() >= 4
    y = np.repeat(np.arange(4), [40, 5, 5, 50])
    take = stratified_take(np.arange(len(y)), y, 8, seed=0)
    assert sorted(np.bincount(y[take]).tolist()) == [2, 2, 2, 2] and np.all(np.diff(take) > 0)


def test_empty_or_missing_imagefolder_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailable, match="no such directory"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path / "nope")), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailable, match="subfolder"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path / "empty")), seed=0)
    with pytest.raises(ConfigError, match="data.root: required"):
        from evoprune import load_config
        load_config(overrides=["data.name=imagefolder"])


# -- torchvision datasets ----------------------------------------------------------------------------------
def _idx_file(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): magic 0x08 (uint8) + number of dims, sizes big-endian, then bytes."""
    header = np.array([0x800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, folder: str | None = "MNIST", n_train: int = 40, n_test: int = 10,
               unpack: bool = True) -> Path:
    """The four IDX files as distributed (.gz), in torchvision's layout (ROOT/folder/raw) or, with
    folder None, in ROOT itself (Debian's layout); `unpack` adds the extracted files beside them."""
    raw = root / folder / "raw" if folder else root
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        _idx_file(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _idx_file(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    if unpack:
        for gz in raw.glob("*.gz"):
            (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    return root


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_from_files_in_torchvision_layout(tmp_path, name, folder):
    root = fake_mnist(tmp_path, folder)
    data = load_data(DataConfig(name=name, root=str(root), download=False, val_fraction=0.25, image_size=16),
                     seed=0, channels=3)
    # the official test split is the test split; val is carved from train
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (30, 10, 10)
    assert data.input_shape == (3, 16, 16) and data.n_classes == 10
    assert data.augment == ("crop" if name == "mnist" else "crop_flip")


@pytest.mark.parametrize("folder", ["FashionMNIST", None])
def test_fashion_mnist_reads_the_original_gz_files_as_they_are(tmp_path, folder):
    root = fake_mnist(tmp_path, folder, unpack=False)  # only the four .gz files, as the error message asks
    data = load_data(DataConfig(name="fashion_mnist", root=str(root), download=False, val_fraction=0.25), seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (30, 10, 10)
    assert data.input_shape == (1, 28, 28) and data.class_names[0] == "T-shirt/top"
    gz = tmp_path / (folder + "/raw" if folder else "") / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-50])  # a damaged (truncated) download
    with pytest.raises(DatasetUnavailable, match="t10k-images-idx3-ubyte.gz"):
        load_data(DataConfig(name="fashion_mnist", root=str(root), download=False), seed=0)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package():
    data = load_data(DataConfig(name="fashion_mnist", root=str(DEBIAN_FASHION_MNIST), download=False,
                                max_train_samples=500, max_eval_samples=200), seed=0)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (500, 200, 200)
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10
    assert sorted(set(data.train_y.tolist())) == list(range(10))  # stratified caps keep every class


@pytest.mark.parametrize("name, expected", [
    ("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python"), ("mnist", "MNIST/raw"),
    ("fashion_mnist", "train-images-idx3-ubyte.gz"),
])
def test_torchvision_dataset_missing_without_download_says_where_files_go(tmp_path, name, expected):
    with pytest.raises(DatasetUnavailable) as info:
        load_data(DataConfig(name=name, root=str(tmp_path), download=False), seed=0)
    message = str(info.value)
    assert str(tmp_path) in message and expected in message and "data.download is false" in message


def test_torchvision_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.mnist as mnist

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    monkeypatch.setattr(mnist, "download_and_extract_archive", offline)
    for name in ("cifar10", "mnist"):
        with pytest.raises(DatasetUnavailable, match="download failed") as info:
            load_data(DataConfig(name=name, root=str(tmp_path / name), download=True), seed=0)
        assert str(tmp_path / name) in str(info.value) and "put " in str(info.value)


# -- augmentation ----------------------------------------------------------------------------------------------
def test_augmentation_crops_and_flips_per_sample():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert augment_batch(x, "none", gen) is x
    flipped = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    for a, b in zip(flipped, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))
    crops = [augment_batch(x, "crop", torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(c.shape == x.shape for c in crops)
    assert any(not torch.equal(c, x) for c in crops)
    for c in crops:  # each sample is its image shifted by at most the padding (1 pixel at 8x8)
        for got, image in zip(c, x):
            assert any(torch.equal(got[:, 1:-1, 1:-1], image[:, 1 + dy:7 + dy, 1 + dx:7 + dx])
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    same = augment_batch(x, "crop_flip", torch.Generator().manual_seed(3))
    assert torch.equal(same, augment_batch(x, "crop_flip", torch.Generator().manual_seed(3)))
