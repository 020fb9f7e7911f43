"""Datasets as in-memory tensors with seeded, stratified train/val/test splits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import DataConfig


@dataclass
class TaskData:
    """A classification task held as tensors; test is kept for final reports, never for selection."""

    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros((batch, *self.input_shape))

    def describe(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "n_classes": self.n_classes,
                "n_train": len(self.train_y), "n_val": len(self.val_y), "n_test": len(self.test_y)}


def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, val and test, stratified by label and fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed + 1)
    return np.sort(train), np.sort(val), np.sort(test)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


def load_data(cfg: DataConfig, seed: int) -> TaskData:
    """Build the task's tensors; normalisation statistics come from train only."""
    if cfg.name == "digits":
        x, y = _digits()
    else:  # config validation admits only known names; this guards direct callers
        raise ValueError(f"unknown dataset {cfg.name!r}")
    train, val, test = stratified_split(y, cfg.val_fraction, cfg.test_fraction, seed)
    mean, std = x[train].mean(), x[train].std() + 1e-8
    x = (x - mean) / std
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return TaskData(name=cfg.name, train_x=t(x[train]), train_y=t(y[train]), val_x=t(x[val]),
                    val_y=t(y[val]), test_x=t(x[test]), test_y=t(y[test]), n_classes=int(y.max()) + 1)
