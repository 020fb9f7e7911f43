"""TaskData: a classification task's splits as tensors, the plain data every later stage reads."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from evoprune.data.preprocess import Preprocessing
from evoprune.data.rows import DatasetRows
from evoprune.metrics import is_multilabel


@dataclass
class TaskData:
    """A classification task held as tensors; test is kept for final reports, never for selection.

    The x tensors may be `expand`ed views (grayscale repeated to 3 channels): index or copy them,
    never write into them in place. A user's Dataset stays a Dataset: its x is a DatasetRows, indexed
    like a tensor but read on demand (`data.rows.batches` streams it); the labels are always tensors.
    """

    name: str
    train_x: torch.Tensor | DatasetRows  # (N, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N,) int64 class indices, or (N, attributes) float32 0/1 for multi-label data
    val_x: torch.Tensor | DatasetRows
    val_y: torch.Tensor
    test_x: torch.Tensor | DatasetRows
    test_y: torch.Tensor
    n_classes: int
    augment: str = "none"  # parent-training augmentation policy: none, crop, flip, crop_flip
    class_names: list[str] | None = None
    preprocessing: Preprocessing | None = None  # how an 8-bit image file becomes an input like these
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros((batch, *self.input_shape))

    def describe(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "n_classes": self.n_classes,
                "task": "multilabel" if is_multilabel(self.train_y) else "single",
                "n_train": len(self.train_y), "n_val": len(self.val_y), "n_test": len(self.test_y),
                "augment": self.augment}
