"""A user's own data (torch Datasets or `(x, y)` tensors, given in Python or by `data.factory`) as TaskData:
the fitness' rows staged by index, whole splits read on demand."""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import TensorDataset
from tqdm import tqdm

from evoprune.config import ConfigError, DataConfig
from evoprune.config.imports import call
from evoprune.config.streams import stream_seed
from evoprune.data.rows import DatasetRows
from evoprune.data.taskdata import TaskData
from evoprune.metrics import is_multilabel


def _pair(item: Any, what: str, row: int) -> tuple[torch.Tensor, Any]:
    """One Dataset item as (input tensor, integer label or 0/1 attribute vector), or a one-line error naming
    the row."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"{what}[{row}] is {type(item).__name__}, expected an (input, label) pair")
    x, y = item[0], item[1]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}[{row}]'s input is {type(x).__name__}, expected a tensor (give the Dataset a "
                        "transform such as torchvision's ToTensor())")
    label = torch.as_tensor(y)
    if label.dim() == 1 and label.numel() > 1 and not label.is_complex():  # multi-label: checked with the rest
        return x, label.float()
    if label.numel() != 1 or label.is_floating_point() or label.is_complex():
        raise TypeError(f"{what}[{row}]'s label is {y!r}, expected one integer class index (or a vector of 0/1 "
                        "attributes)")
    return x, int(label)


def _is_tensors(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


def _tensors_of(data: Any) -> Any:
    """A TensorDataset of (x, y) as its two tensors (already in memory: indexed, not read item by item)."""
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors
    return data


def _length(data: Any, what: str) -> int:
    """The number of samples of a Dataset or an (x, y) pair; one-line errors for anything else or nothing."""
    tensors = _is_tensors(data)
    if not tensors and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"{what} is {type(data).__name__}, expected a torch Dataset (with __len__ and __getitem__) "
                        "or an (x, y) pair of tensors")
    length = len(data[0]) if tensors else len(data)
    if tensors and len(data[1]) != length:
        raise ValueError(f"{what}: x has {length} rows but y has {len(data[1])}")
    if length == 0:
        raise ValueError(f"{what} is empty")
    return length


def _rows(length: int, n: int | None, seed: int) -> torch.Tensor:
    """All rows, or `n` of them drawn in O(n) memory (a permutation of a long Dataset grows with its length)."""
    if n is None or n >= length:
        return torch.arange(length)
    return torch.tensor(sorted(random.Random(seed).sample(range(length), n)))


def _checked_labels(y: torch.Tensor, what: str) -> torch.Tensor:
    """Class indices (N,) as int64, or multi-label rows (N, attributes) of 0/1 as float32."""
    if y.dim() == 2 and not y.is_complex():
        if len(y) and not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"{what}: multi-label rows must hold 0 or 1 per attribute")
        return y.float()
    if y.is_floating_point() or y.is_complex() or y.dim() != 1:
        raise TypeError(f"{what}: labels are {tuple(y.shape)} {y.dtype}, expected one integer class index per row")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{what} has a negative label ({int(y.min())}); labels are class indices from 0")
    return y.long()


def stage(data: Any, n: int | None, seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `n` samples of `data` (a map-style Dataset of (input, label) items, or an (x, y) pair of
    tensors) as float32 inputs and int64 labels: all of it when it is no longer, else a seeded random
    subset. A Dataset is indexed at the chosen rows only, so its length costs neither time nor memory."""
    data = _tensors_of(data)
    rows = _rows(_length(data, what), n, seed)
    if _is_tensors(data):
        x, y = data[0][rows.to(data[0].device)].cpu(), data[1][rows.to(data[1].device)].cpu()
    else:
        pairs = [_pair(data[int(i)], what, int(i)) for i in rows]
        shapes = {tuple(x.shape) for x, _ in pairs}
        if len(shapes) > 1:
            raise ValueError(f"{what}'s inputs differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}): resize "
                             "them to one shape")
        x = torch.stack([x for x, _ in pairs])
        labels = [label for _, label in pairs]
        y = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return x.float(), _checked_labels(y, what)


def labels_of(data: Any, rows: torch.Tensor, what: str) -> torch.Tensor:
    """The labels of `rows` of a Dataset: its `targets` (torchvision's convention: ImageFolder, MNIST, CIFAR
    have them) when it has one per item, else read item by item (each item is then read once)."""
    targets = getattr(data, "targets", None)
    # a target_transform changes what items give: their `targets` are then not their labels
    if targets is not None and len(targets) == len(data) and getattr(data, "target_transform", None) is None:
        return _checked_labels(torch.as_tensor(targets)[rows], what)
    read = tqdm(rows.tolist(), desc=f"reading {what}'s labels (a `targets` attribute would spare it)",
                disable=len(rows) < 50_000, leave=False)
    labels = [_pair(data[i], what, i)[1] for i in read]
    return _checked_labels(torch.stack(labels) if labels and isinstance(labels[0], torch.Tensor)
                           else torch.tensor(labels), what)


def split_rows(data: Any, n: int | None, seed: int, what: str, channels: int | None = None, workers: int = 0
               ) -> tuple[torch.Tensor | DatasetRows, torch.Tensor]:
    """Up to `n` samples of `data` (all, or a seeded subset): tensors stay tensors, a Dataset's inputs are
    read when used (DatasetRows, `workers` DataLoader processes); grayscale is repeated to `channels`."""
    data = _tensors_of(data)
    rows = _rows(_length(data, what), n, seed)
    if _is_tensors(data):
        x, y = stage(data, n, seed, what)
        if channels is not None and x.dim() > 1 and x.shape[1] != channels:
            if x.shape[1] != 1:
                raise ValueError(f"{what} inputs have {x.shape[1]} channels; the parent needs {channels}")
            x = x.expand(-1, channels, *x.shape[2:])
        return x, y
    full = len(rows) == len(data)
    return DatasetRows(data, what, None if full else rows, channels, workers), labels_of(data, rows, what)


def _task(name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> TaskData:
    """TaskData from staged (x, y) splits, train first; every split's inputs shaped like train's."""
    (train_x, train_y), *rest = splits.values()
    for split, (x, _) in list(splits.items())[1:]:
        if len(x) and x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"train inputs are {tuple(train_x.shape[1:])} but {split} inputs {tuple(x.shape[1:])}")
    if is_multilabel(train_y):  # multi-label: one output per attribute
        if any(y.dim() != 2 or y.shape[1] != train_y.shape[1] for _, y in splits.values() if len(y)):
            raise ValueError(f"every split needs {train_y.shape[1]} attributes per row, as train has")
        n_classes = int(train_y.shape[1])
    else:
        if any(y.dim() != 1 for _, y in splits.values() if len(y)):
            raise ValueError("train has class indices but another split has attribute rows")
        n_classes = int(max(int(y.max()) for _, y in splits.values() if len(y))) + 1
    (val_x, val_y), (test_x, test_y) = rest
    return TaskData(name=name, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x,
                    test_y=test_y, n_classes=n_classes, class_names=[str(c) for c in range(n_classes)])


STREAMED_VAL_SAMPLES = 5000  # `fitness.val_samples: 0` on a split read on demand: a seeded subset of this many


def user_task(train: Any, val: Any, n_train: int, n_val: int | None, seed: int) -> TaskData:
    """TaskData from a user's train and validation data, `n_train` and `n_val` (None: all) samples staged.
    It holds no test split (the search never reads one): final reports on test take the user's data."""
    train_xy = stage(train, n_train, stream_seed(seed, "user.stage", 0), "train")
    if n_val is None and not _is_tensors(_tensors_of(val)):  # a Dataset is read item by item: not all of it
        n_val = STREAMED_VAL_SAMPLES
    val_x, val_y = stage(val, n_val, stream_seed(seed, "user.stage", 1), "val")
    return _task("user", {"train": train_xy, "val": (val_x, val_y), "test": (val_x[:0], val_y[:0])})


def given_task(splits: Any, caps: tuple[int, int, int], seed: int, channels: int | None, name: str,
               images: bool, workers: int = 0) -> TaskData:
    """TaskData from a user's (train, val, test), each whole up to its cap (0: all; else a seeded subset), as
    given: no splitting, resizing or normalising. Tensors are held; a Dataset's inputs are read when used
    (DatasetRows), its labels once. `channels`: what the parent needs; grayscale is repeated to it.
    `images`: every split must hold (channels, height, width) inputs. TypeError/ValueError naming `name`
    and the split."""
    if not isinstance(splits, (tuple, list)) or len(splits) != 3:
        raise TypeError(f"{name} returned {type(splits).__name__}, expected (train, val, test)")
    staged = {}
    for i, (split, part, cap) in enumerate(zip(("train", "val", "test"), splits, caps)):
        what = f"{name}'s {split}"
        x, y = split_rows(part, cap or None, stream_seed(seed, "user.stage", 2 + i), what, channels, workers)
        if images and x.dim() != 4:
            raise ValueError(f"{what} inputs are {tuple(x.shape[1:])}, expected images (channels, height, width)")
        staged[split] = (x, y)
    return _task(name, staged)


def factory_task(cfg: DataConfig, seed: int, channels: int | None) -> TaskData:
    """`data.name: python`: the (train, val, test) that `data.factory` returns, whole (up to the
    `data.max_*_samples` caps, seeded subsets), as given: no splitting, resizing or normalising; a Dataset's
    inputs are read when used, by `data.workers` DataLoader processes.
    `channels`: what the parent needs; grayscale is repeated to it (a view), as for the built-in sources."""
    splits = call(cfg.factory, "data.factory")
    caps = (cfg.max_train_samples, cfg.max_eval_samples, cfg.max_eval_samples)
    try:
        data = given_task(splits, caps, seed, channels, cfg.factory, images=True, workers=cfg.workers)
    except (TypeError, ValueError) as exc:
        raise ConfigError("data.factory", str(exc)) from None
    if is_multilabel(data.train_y) != (cfg.task == "multilabel"):
        got = "rows of 0/1 attributes" if is_multilabel(data.train_y) else "class indices"
        raise ConfigError("data.task", f"{cfg.factory}'s labels are {got}, but data.task is {cfg.task}")
    return replace(data, name="python")
