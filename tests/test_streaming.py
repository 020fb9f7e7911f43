"""A user's Dataset is read when used, not held: DatasetRows indexes like a tensor, and parent training and final
distillation stream it through a DataLoader to the same weights as from tensors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from evoprune import load_config
from evoprune.data.rows import DatasetRows, batches
from evoprune.data.user import given_task


class Counted(Dataset):
    """Items made from their index, reads counted; `targets` as torchvision's datasets have them."""

    def __init__(self, n: int, channels: int = 1, size: int = 8, with_targets: bool = True):
        self.n, self.channels, self.size, self.reads = n, channels, size, 0
        if with_targets:
            self.targets = np.arange(n) % 10

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads += 1
        gen = torch.Generator().manual_seed(int(i))
        x = torch.rand(self.channels, self.size, self.size, generator=gen)
        x[:, i % 10 % self.size, :] += 1.0
        return x, int(i % 10)


def staged(ds: Counted) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.arange(len(ds)) % 10


def test_dataset_rows_index_like_the_tensor_and_read_only_what_is_asked():
    ds = Counted(1_000_000)
    rows = DatasetRows(ds, "train")
    assert rows.shape == (1_000_000, 1, 8, 8) and rows.dim() == 4
    idx = torch.tensor([5, 999_999, 3])
    assert torch.equal(rows[idx], torch.stack([ds[5][0], ds[999_999][0], ds[3][0]]))
    assert torch.equal(rows[2:4], torch.stack([ds[2][0], ds[3][0]])) and rows[:0].shape == (0, 1, 8, 8)
    assert ds.reads < 20
    three = DatasetRows(ds, "train", channels=3)
    assert three[[7]].shape == (1, 3, 8, 8) and torch.equal(three[[7]][0, 2], ds[7][0][0])
    sub = rows.subset(torch.tensor([10, 20]))
    assert len(sub) == 2 and torch.equal(sub[[1]][0], ds[20][0])


def test_a_task_of_datasets_holds_none_of_their_inputs():
    train, val, test = Counted(500_000), Counted(300), Counted(200, with_targets=False)
    data = given_task((train, val, test), (0, 0, 0), 0, None, "mine", images=True)
    assert isinstance(data.train_x, DatasetRows) and len(data.train_y) == 500_000
    assert train.reads <= 2  # labels from `targets`; the shape from one item
    assert test.reads >= 200  # no `targets`: each label read once
    assert data.n_classes == 10 and data.input_shape == (1, 8, 8)
    capped = given_task((train, val, test), (1000, 0, 0), 0, None, "mine", images=True)
    assert len(capped.train_x) == len(capped.train_y) == 1000
    with pytest.raises(ValueError, match="expected images"):
        given_task(((torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), val, test), (0, 0, 0), 0, None, "mine",
                   images=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_indexed_ones(workers):
    ds = Counted(300)
    rows = DatasetRows(ds, "train", workers=workers)
    x, _ = staged(ds)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0)).split(64)
    for idx, got in zip(order, batches(rows, order)):
        assert torch.equal(got, x[idx])


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def test_parent_training_on_a_streamed_dataset_equals_training_on_its_tensors():
    from evoprune.parent.train import train_parent

    train, val, test = Counted(600), Counted(100), Counted(100)
    lazy = given_task((train, val, test), (0, 0, 0), 0, None, "mine", images=True, workers=2)
    held = given_task((staged(train), staged(val), staged(test)), (0, 0, 0), 0, None, "mine", images=True)
    for data in (lazy, held):
        data.augment = "crop"
    a, _ = train_parent(_net(), lazy, epochs=2, lr=0.05, batch_size=64, seed=0, progress=False)
    b, _ = train_parent(_net(), held, epochs=2, lr=0.05, batch_size=64, seed=0, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_final_distillation_on_a_streamed_dataset_equals_it_on_tensors():
    from evoprune.deploy.distill import distill_model

    train, val, test = Counted(400), Counted(100), Counted(100)
    lazy = given_task((train, val, test), (0, 0, 0), 0, None, "mine", images=True, workers=1)
    held = given_task((staged(train), staged(val), staged(test)), (0, 0, 0), 0, None, "mine", images=True)
    cfg = load_config(overrides=["distill.epochs=2", "distill.batch_size=32"]).distill
    teacher = _net().eval()
    out = [distill_model(copy.deepcopy(teacher), teacher, data, cfg, 0, torch.device("cpu"), aug="flip")
           for data in (lazy, held)]
    for (k, va), vb in zip(out[0][0].state_dict().items(), out[1][0].state_dict().values()):
        assert torch.equal(va, vb), k
    assert out[0][2]["history"] == out[1][2]["history"]


@pytest.mark.parametrize("size", [None, 8])
def test_an_image_folder_read_when_used_gives_the_inputs_it_holds(tmp_path, size):
    from test_data import make_imagefolder

    from evoprune.config import DataConfig
    from evoprune.data.task import load_data

    root = make_imagefolder(tmp_path / "imgs", classes=3, per_class=12, size=(12, 10) if size is None else (15, 11))
    held = load_data(DataConfig(name="imagefolder", root=str(root), image_size=size, in_memory=True), seed=0,
                     channels=3)
    read = load_data(DataConfig(name="imagefolder", root=str(root), image_size=size, in_memory=False, workers=0),
                     seed=0, channels=3)
    assert isinstance(read.train_x, DatasetRows) and isinstance(held.train_x, torch.Tensor)
    for split in ("train", "val", "test"):
        x, y = getattr(held, f"{split}_x"), getattr(held, f"{split}_y")
        assert torch.equal(getattr(read, f"{split}_y"), y)
        assert torch.allclose(getattr(read, f"{split}_x")[torch.arange(len(y))], x, atol=1e-5), split
    assert read.preprocessing.mean == pytest.approx(held.preprocessing.mean, abs=1e-6)
    assert read.input_shape == held.input_shape and read.n_classes == held.n_classes == 3


def test_masks_and_scalars_index_like_a_tensor_and_a_workers_error_is_one_line():
    from evoprune import ConfigError

    ds = Counted(20)
    rows = DatasetRows(ds, "train")
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[3, 7]] = True
    assert torch.equal(rows[mask], torch.stack([ds[3][0], ds[7][0]]))
    assert torch.equal(rows[torch.tensor(4)], ds[4][0]) and torch.equal(rows[np.int64(5)], ds[5][0])

    class Broken(Counted):
        def __getitem__(self, i):
            if i == 9:
                raise ValueError("item 9 is damaged")
            return super().__getitem__(i)

    broken = DatasetRows(Broken(20), "train", workers=1)
    with pytest.raises(ConfigError, match="item 9 is damaged") as err:
        list(batches(broken, torch.arange(20).split(5)))
    assert "\n" not in str(err.value)
