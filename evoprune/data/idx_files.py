"""MNIST and Fashion-MNIST from their original IDX files (`.gz` as distributed, or unpacked), offline."""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from evoprune.data.sources import DatasetUnavailable, Source

# The four files of both datasets, by split: (images, labels)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed when its name ends in .gz) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # unreadable, or a damaged / truncated gzip stream
        raise DatasetUnavailable(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != UNSIGNED_BYTE or raw[3] == 0:
        raise DatasetUnavailable(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DatasetUnavailable(f"{path}: holds {len(raw) - header} bytes of data, its header says "
                                 f"{math.prod(dims)} ({'x'.join(map(str, dims))}); the file is damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_files(folders: list[Path]) -> dict[str, tuple[Path, Path]] | None:
    """The four files, all from the first folder that holds every one (each `.gz` or unpacked), or None."""
    for folder in folders:
        found = {}
        for split, names in IDX_FILES.items():
            paths = [next((folder / f for f in (n + ".gz", n) if (folder / f).is_file()), None) for n in names]
            if None in paths:
                break
            found[split] = (paths[0], paths[1])
        else:
            return found
    return None


def idx_source(folders: list[Path], classes: list[str]) -> Source | None:
    """A Source for MNIST-layout IDX files in the first of `folders` that holds all four, or None."""
    files = find_idx_files(folders)
    if files is None:
        return None
    images, labels = {}, {}
    for split, (image_path, label_path) in files.items():
        images[split], labels[split] = read_idx(image_path), read_idx(label_path).astype(np.int64)
        if images[split].ndim != 3 or labels[split].ndim != 1 or len(images[split]) != len(labels[split]):
            raise DatasetUnavailable(f"{image_path} ({'x'.join(map(str, images[split].shape))}) and {label_path} "
                                     f"({len(labels[split])} labels) do not make one split of N images and N labels")

    def fetch(sel: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: images[split][idx][:, None].astype(np.float32) / 255.0 for k, (split, idx) in sel.items()}

    return Source(labels, fetch, classes)
