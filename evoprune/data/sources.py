"""What a dataset source is (labels per split, decoding on demand), and the embedded digits source."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from evoprune.config import DataConfig

TORCHVISION_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
DEFAULT_ROOT = "data"


class DatasetUnavailable(FileNotFoundError):
    """The dataset's files are not there (and could not be downloaded); the message says where they go."""


@dataclass
class Source:
    """`labels[split]` for the splits the source has (`all`, or `train` and maybe `val`, `test`);
    `fetch({key: (split, indices)})` decodes each as float32 (n, C, H, W) in [0, 1], all at once
    (so an image folder picks one colour mode for every split)."""

    labels: dict[str, np.ndarray]
    fetch: Callable[[dict[str, tuple[str, np.ndarray]]], dict[str, np.ndarray]]
    classes: list[str] | None = None
    files: dict[str, list[str]] | None = None  # an image folder's file per sample: it can be read when used


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


def digits_source(cfg: DataConfig) -> Source:
    """scikit-learn's 8x8 handwritten digits, embedded (offline); one `all` split."""
    x, y = _digits()
    return Source({"all": y}, lambda sel: {k: x[i] for k, (_, i) in sel.items()})
