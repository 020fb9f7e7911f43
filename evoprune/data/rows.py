"""A Dataset's inputs read on demand (DatasetRows), indexed like a tensor, and train batches streamed through a
DataLoader: a split of any length costs memory only for the rows in use."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from evoprune.config import ConfigError


def item_input(item: Any, what: str, row: int) -> torch.Tensor:
    """The input tensor of one (input, label) item, or a one-line TypeError naming the row."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"{what}[{row}] is {type(item).__name__}, expected an (input, label) pair")
    if not isinstance(item[0], torch.Tensor):
        raise TypeError(f"{what}[{row}]'s input is {type(item[0]).__name__}, expected a tensor (give the Dataset a "
                        "transform such as torchvision's ToTensor())")
    return item[0]


class _Inputs(Dataset):
    """The inputs of `rows` of a Dataset, as float32 (and grayscale repeated to `channels`): what DataLoader
    workers read."""

    def __init__(self, source: "DatasetRows"):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source.read(i)


class DatasetRows:
    """A map-style Dataset's inputs (rows `rows` of it, else all), read when indexed: `x[idx]` with an
    int, a slice, a list or a LongTensor gives the stacked float32 inputs, as a tensor would. Only the
    shapes and the rows asked for are ever read, so the Dataset's length costs nothing.

    `channels`: grayscale inputs are repeated to this many (as the built-in sources do for a torchvision
    parent). `workers`: DataLoader processes that read and decode items for `batches`."""

    def __init__(self, dataset: Any, what: str, rows: torch.Tensor | None = None, channels: int | None = None,
                 workers: int = 0):
        self.dataset, self.what, self.workers = dataset, what, workers
        self.rows = rows
        self.channels = channels
        self._length = len(rows) if rows is not None else len(dataset)
        self._item_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self._length

    def read(self, i: int) -> torch.Tensor:
        """Input `i` of these rows (an index into the Dataset through `rows`)."""
        row = int(self.rows[i]) if self.rows is not None else int(i)
        x = item_input(self.dataset[row], self.what, row).float()
        if self.channels is not None and x.shape[0] != self.channels:
            if x.shape[0] != 1:
                raise ValueError(f"{self.what} inputs have {x.shape[0]} channels; the parent needs {self.channels}")
            x = x.expand(self.channels, *x.shape[1:])
        return x

    @property
    def shape(self) -> torch.Size:
        if self._item_shape is None:
            self._item_shape = tuple(self.read(0).shape) if len(self) else ()
        return torch.Size((len(self), *self._item_shape))

    dtype = torch.float32

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: int | slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            key = torch.nonzero(key.flatten()).flatten()  # a mask selects its True rows, as on a tensor
        elif isinstance(key, torch.Tensor) and key.dim() == 0:
            key = int(key)
        if not isinstance(key, (slice, list, tuple, range, torch.Tensor)):  # an int, or a numpy integer
            key = int(key)
            return self.read(key if key >= 0 else len(self) + key)
        if isinstance(key, slice):
            key = range(*key.indices(len(self)))
        elif isinstance(key, torch.Tensor):
            key = key.flatten().tolist()
        items = [self.read(int(i)) for i in key]
        if not items:
            return torch.zeros((0, *self.shape[1:]))
        shapes = {tuple(x.shape) for x in items}
        if len(shapes) > 1:
            raise ValueError(f"{self.what}'s inputs differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}): "
                             "resize them to one shape")
        return torch.stack(items)

    def subset(self, rows: torch.Tensor) -> "DatasetRows":
        """These rows' `rows` (positions in this object), still read on demand."""
        inner = rows if self.rows is None else self.rows[rows]
        return DatasetRows(self.dataset, self.what, inner, self.channels, self.workers)


def batches(x: torch.Tensor | DatasetRows, index_batches: Sequence[torch.Tensor], pin: bool = False
            ) -> Iterator[torch.Tensor]:
    """The inputs of each batch of row indices, in order: indexed in memory for a tensor; for DatasetRows
    read by a DataLoader with its workers, which read ahead while the caller trains."""
    if isinstance(x, torch.Tensor):
        for idx in index_batches:
            yield x[idx]
        return
    loader = DataLoader(_Inputs(x), batch_sampler=[b.tolist() for b in index_batches], num_workers=x.workers,
                        pin_memory=pin, persistent_workers=False)
    try:
        yield from loader
    except Exception as err:  # a worker's error arrives with its whole traceback as the message: keep its last line
        text = str(err)
        if "in DataLoader worker process" not in text:
            raise
        raise ConfigError("data", f"reading {x.what}: {text.strip().splitlines()[-1]}") from None
