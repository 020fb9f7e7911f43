"""A user's own data (torch Datasets or `(x, y)` tensors, given in Python or by `data.factory`) staged as
TaskData by indexing the rows it needs."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from evoprune.config import ConfigError, DataConfig
from evoprune.config.imports import call
from evoprune.config.streams import stream_seed
from evoprune.data.taskdata import TaskData


def _pair(item: Any, what: str, row: int) -> tuple[torch.Tensor, int]:
    """One Dataset item as (input tensor, integer label), or a one-line error naming the row."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"{what}[{row}] is {type(item).__name__}, expected an (input, label) pair")
    x, y = item[0], item[1]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}[{row}]'s input is {type(x).__name__}, expected a tensor (give the Dataset a "
                        "transform such as torchvision's ToTensor())")
    label = torch.as_tensor(y)
    if label.numel() != 1 or label.is_floating_point() or label.is_complex():
        raise TypeError(f"{what}[{row}]'s label is {y!r}, expected one integer class index")
    return x, int(label)


def stage(data: Any, n: int | None, seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `n` samples of `data` (a map-style Dataset of (input, label) items, or an (x, y) pair of
    tensors) as float32 inputs and int64 labels: all of it when it is no longer, else a seeded random
    subset. A Dataset is indexed at the chosen rows only, so its length costs nothing."""
    tensors = isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)
    if not tensors and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"{what} is {type(data).__name__}, expected a torch Dataset (with __len__ and __getitem__) "
                        "or an (x, y) pair of tensors")
    length = len(data[0]) if tensors else len(data)
    if tensors and len(data[1]) != length:
        raise ValueError(f"{what}: x has {length} rows but y has {len(data[1])}")
    if length == 0:
        raise ValueError(f"{what} is empty")
    if n is None or n >= length:
        rows = torch.arange(length)
    else:
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randperm(length, generator=gen)[:n].sort().values
    if tensors:
        x, y = data[0][rows], data[1][rows]
        if y.is_floating_point() or y.dim() != 1:
            raise TypeError(f"{what}: y is {tuple(y.shape)} {y.dtype}, expected one integer class index per row")
    else:
        pairs = [_pair(data[int(i)], what, int(i)) for i in rows]
        shapes = {tuple(x.shape) for x, _ in pairs}
        if len(shapes) > 1:
            raise ValueError(f"{what}'s inputs differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}): resize "
                             "them to one shape")
        x = torch.stack([x for x, _ in pairs])
        y = torch.tensor([label for _, label in pairs])
    if int(y.min()) < 0:
        raise ValueError(f"{what} has a negative label ({int(y.min())}); labels are class indices from 0")
    return x.float(), y.long()


def _task(name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> TaskData:
    """TaskData from staged (x, y) splits, train first; every split's inputs shaped like train's."""
    (train_x, train_y), *rest = splits.values()
    for split, (x, _) in list(splits.items())[1:]:
        if len(x) and x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"train inputs are {tuple(train_x.shape[1:])} but {split} inputs {tuple(x.shape[1:])}")
    n_classes = int(max(int(y.max()) for _, y in splits.values() if len(y))) + 1
    (val_x, val_y), (test_x, test_y) = rest
    return TaskData(name=name, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x,
                    test_y=test_y, n_classes=n_classes, class_names=[str(c) for c in range(n_classes)])


def user_task(train: Any, val: Any, n_train: int, n_val: int | None, seed: int) -> TaskData:
    """TaskData from a user's train and validation data, `n_train` and `n_val` (None: all) samples staged.
    It holds no test split (the search never reads one): final reports on test take the user's data."""
    train_xy = stage(train, n_train, stream_seed(seed, "user.stage", 0), "train")
    val_x, val_y = stage(val, n_val, stream_seed(seed, "user.stage", 1), "val")
    return _task("user", {"train": train_xy, "val": (val_x, val_y), "test": (val_x[:0], val_y[:0])})


def given_task(splits: Any, caps: tuple[int, int, int], seed: int, channels: int | None, name: str,
               images: bool) -> TaskData:
    """TaskData from a user's (train, val, test), each staged whole up to its cap (0: all; else a seeded
    subset), as given: no splitting, resizing or normalising. `channels`: what the parent needs; grayscale
    is repeated to it (a view). `images`: every split must hold (channels, height, width) inputs.
    TypeError/ValueError naming `name` and the split."""
    if not isinstance(splits, (tuple, list)) or len(splits) != 3:
        raise TypeError(f"{name} returned {type(splits).__name__}, expected (train, val, test)")
    staged = {}
    for i, (split, part, cap) in enumerate(zip(("train", "val", "test"), splits, caps)):
        x, y = stage(part, cap or None, stream_seed(seed, "user.stage", 2 + i), f"{name}'s {split}")
        if images and x.dim() != 4:
            raise ValueError(f"{name}'s {split} inputs are {tuple(x.shape[1:])}, expected images "
                             "(channels, height, width)")
        if channels is not None and x.shape[1] != channels:
            if x.shape[1] != 1:
                raise ValueError(f"{split} inputs have {x.shape[1]} channels; the parent needs {channels}")
            x = x.expand(-1, channels, -1, -1)
        staged[split] = (x, y)
    return _task(name, staged)


def factory_task(cfg: DataConfig, seed: int, channels: int | None) -> TaskData:
    """`data.name: python`: the (train, val, test) that `data.factory` returns, staged whole (up to the
    `data.max_*_samples` caps, seeded subsets), as given: no splitting, resizing or normalising.
    `channels`: what the parent needs; grayscale is repeated to it (a view), as for the built-in sources."""
    splits = call(cfg.factory, "data.factory")
    caps = (cfg.max_train_samples, cfg.max_eval_samples, cfg.max_eval_samples)
    try:
        return replace(given_task(splits, caps, seed, channels, cfg.factory, images=True), name="python")
    except (TypeError, ValueError) as exc:
        raise ConfigError("data.factory", str(exc)) from None
