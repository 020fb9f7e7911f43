"""Dataset sources on disk: torchvision's datasets (MNIST-layout IDX files read as they are) and ImageFolder trees.

Each gives labels per split and decodes only the samples asked for (see data.sources.Source); data.task
splits, caps, resizes and normalises them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evoprune.config import ConfigError, DataConfig
from evoprune.data.idx_files import idx_source
from evoprune.data.preprocess import NotAnImage, Preprocessing
from evoprune.data.sources import DEFAULT_ROOT, DatasetUnavailable, Source


def _idx_folders(cls: type, root: Path) -> list[Path]:
    """Where MNIST-layout IDX files are read from: data.root itself (e.g. Debian's
    /usr/share/datasets/fashion-mnist), then torchvision's layout under it."""
    return [root, root / cls.__name__ / "raw"]


def _where_files_go(name: str, cls: type, root: Path) -> str:
    if name in ("cifar10", "cifar100"):
        return f"put {cls.filename} (from {cls.url}) or its extracted folder {cls.base_folder}/ into {root}"
    files = ", ".join(f for f, _ in cls.resources)
    return f"put {files} (from {cls.mirrors[0]}; .gz or unpacked) into {' or '.join(map(str, _idx_folders(cls, root)))}"


def torchvision_source(cfg: DataConfig) -> Source:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST,
           "fashion_mnist": datasets.FashionMNIST}[cfg.name]
    root = Path(cfg.root or DEFAULT_ROOT).expanduser().absolute()
    if cfg.name in ("mnist", "fashion_mnist"):  # the original files as they are, without torchvision's checks
        source = idx_source(_idx_folders(cls, root), list(cls.classes))
        if source is not None:
            return source
    parts = {}
    for split, train in (("train", True), ("test", False)):
        try:
            parts[split] = cls(str(root), train=train, download=cfg.download)
        except (RuntimeError, OSError) as exc:  # not found / corrupted, or the download failed (URLError...)
            why = "the download failed" if cfg.download else "data.download is false"
            detail = " ".join(str(exc).split())[:200]
            raise DatasetUnavailable(
                f"data.name={cfg.name}: not found in {root} and {why} ({exc.__class__.__name__}: {detail}); "
                f"{_where_files_go(cfg.name, cls, root)}, or set data.root to where the files are, or run with "
                f"data.download=true on a machine with internet access and copy data.root here") from None

    def array(split: str) -> np.ndarray:
        data = parts[split].data
        data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        return data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # (N, C, H, W) uint8

    labels = {s: np.asarray(p.targets, dtype=np.int64) for s, p in parts.items()}

    def fetch(sel: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: array(split)[idx].astype(np.float32) / 255.0 for k, (split, idx) in sel.items()}

    return Source(labels, fetch, list(parts["train"].classes))


_GRAY = {"1", "L", "LA", "I", "I;16", "F"}


def imagefolder_source(cfg: DataConfig) -> Source:
    """Class subfolders under data.root, or under its train/ (and optional val/, test/) folders."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(cfg.root or "").expanduser().absolute()
    if not root.is_dir():
        raise DatasetUnavailable(f"data.root={root}: no such directory (expected one subfolder of images per "
                                 f"class, or train/ [val/ test/] folders holding them)")
    has_splits = (root / "train").is_dir()
    dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} if has_splits else {"all": root}
    first = "train" if has_splits else "all"
    try:
        classes, class_to_idx = find_classes(str(dirs[first]))
    except FileNotFoundError as exc:  # no class folder at all
        raise DatasetUnavailable(f"data.root={root}: {exc}; expected one subfolder of images per class") from None
    files: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, d in dirs.items():
        if split != first:
            extra = sorted(set(find_classes(str(d))[0]) - set(classes))
            if extra:
                raise ConfigError("data.root", f"{root}: {split}/ has classes that {first}/ lacks: "
                                               f"{', '.join(extra)}")
        try:
            samples = make_dataset(str(d), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=split != first)
        except FileNotFoundError as exc:  # a class folder without images
            raise DatasetUnavailable(f"data.root={root}: {' '.join(str(exc).split())}") from None
        files[split] = [p for p, _ in samples]
        labels[split] = np.asarray([c for _, c in samples], dtype=np.int64)

    return Source(labels, image_fetch(files, cfg.image_size, root), classes, files)


def image_fetch(files: dict[str, list[str]], size: int | None, root: Path):
    """A Source's `fetch` for image files: every selected image decoded (one colour mode for all: grayscale
    if all are, else RGB), resized by `size`, as float32 (n, C, H, W) in [0, 1]."""
    from PIL import Image

    def fetch(sel: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
        chosen = {k: [files[split][i] for i in idx] for k, (split, idx) in sel.items()}
        modes = set()
        for paths in chosen.values():
            for p in paths:
                with Image.open(p) as im:  # reads the header only
                    modes.add(im.mode)
        mode = "L" if modes <= _GRAY else "RGB"
        out = {}
        for key, paths in chosen.items():
            arrays = [_decode(p, mode, size) for p in paths]
            sizes = {a.shape for a in arrays}
            if len(sizes) > 1:
                shown = ", ".join(map(str, sorted(sizes)[:3]))
                raise ConfigError("data.root", f"{root}: images of different sizes ({shown}); set data.image_size "
                                               f"to resize them to one")
            c = 1 if mode == "L" else 3
            out[key] = (np.stack(arrays).reshape(len(arrays), *arrays[0].shape[:2], c).transpose(0, 3, 1, 2)
                          .astype(np.float32) / 255.0) if arrays else np.zeros((0, c, 1, 1), np.float32)
        return out

    return fetch


def _decode(path: str, mode: str, size: int | None) -> np.ndarray:
    """An image as uint8 (H, W[, 3]); with `size`: shorter side resized to it, then centre-cropped square."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if size is not None:
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)


class ImageFiles(Dataset):
    """Image files decoded when indexed, each exactly as `prep` prepares an image (the in-memory path's
    decode, resize and normalisation): an image folder too large to hold."""

    def __init__(self, paths: list[str], labels: np.ndarray, prep: Preprocessing):
        self.paths, self.targets, self.prep = paths, labels, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            x = self.prep(self.paths[i])[0]
        except NotAnImage as exc:
            raise ConfigError("data.root", f"{exc}; set data.image_size to resize every image to one size") from None
        label = self.targets[i]
        return x, (torch.as_tensor(label) if np.ndim(label) else int(label))
