"""Datasets as in-memory tensors (or, for a large image folder, images decoded when used) with seeded,
stratified train/val/test splits.

Sources: the embedded scikit-learn `digits`; torchvision CIFAR-10/100, MNIST and Fashion-MNIST
(downloaded into `data.root` when online, else a clear error saying where the files go); and
`imagefolder`, an ImageNet-style tree of class subfolders. Every split is decoded once, resized
(`data.image_size`), scaled to [0, 1] and normalised per channel with statistics of the train
split only. Grayscale data are repeated to 3 channels when the parent needs it (torchvision
models): an `expand`ed view, so the 3 channels cost no memory. Validation is carved from train
(stratified, seeded); test is kept for final reports and never used for selection.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from evoprune.config import Config, ConfigError, DataConfig
from evoprune.config.streams import stream_seed
from evoprune.data.attributes import attributes_source
from evoprune.data.disk_sources import ImageFiles, imagefolder_source, torchvision_source
from evoprune.data.preprocess import Preprocessing
from evoprune.data.rows import DatasetRows
from evoprune.data.sources import TORCHVISION_DATASETS, Source, digits_source
from evoprune.data.taskdata import TaskData
from evoprune.data.user import factory_task

__all__ = ["TaskData", "load_data", "load_task", "augment_batch", "augment_policy", "split_seed"]

AUGMENT_AUTO = {"digits": "none", "mnist": "crop", "python": "none"}  # every other dataset: crop_flip
HOLD_BYTES = 2 * 1024**3  # `data.in_memory: null`: an image folder decoded larger than this is read when used
STATS_SAMPLES = 1000  # train images a streamed image folder's colour mode and normalisation come from

def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, val and test, stratified by label and fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=stream_seed(seed, "split.test"))
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=stream_seed(seed, "split.val"))
    except ValueError as exc:  # too few samples per class for the fractions asked
        raise ConfigError("data.val_fraction", f"cannot split {len(y)} samples of {len(np.unique(y))} classes "
                          f"into train/val/test stratified by class ({exc}); use more data or larger "
                          f"fractions") from None
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_holdout(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int,
                       key: str = "data.val_fraction") -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` (labels `y[idx]`) into kept and held-out indices, stratified, fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(idx, test_size=fraction, stratify=y[idx], random_state=seed)
    except ValueError as exc:
        raise ConfigError(key, f"cannot hold out {fraction} of {len(idx)} samples stratified by class "
                               f"({exc}); use more data or a larger fraction") from None
    return np.sort(keep), np.sort(held)


def stratified_take(idx: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most `n` of `idx`, classes interleaved in a seeded random order (a stratified subset)."""
    if n <= 0 or n >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    shuffled = idx[rng.permutation(len(idx))]
    labels = y[shuffled]
    rank = np.zeros(len(shuffled), dtype=np.int64)  # position of each sample within its class
    for c in np.unique(labels):
        where = labels == c
        rank[where] = np.arange(where.sum())
    order = np.lexsort((rng.random(len(shuffled)), rank))  # round-robin over classes
    return np.sort(shuffled[order[:n]])


def _source(cfg: DataConfig) -> Source:
    if cfg.name == "digits":
        return digits_source(cfg)
    if cfg.name in TORCHVISION_DATASETS:
        return torchvision_source(cfg)
    if cfg.name == "imagefolder":
        return imagefolder_source(cfg)
    if cfg.name == "attributes":
        return attributes_source(cfg)
    raise ValueError(f"unknown dataset {cfg.name!r}")  # config validation admits only known names


def _splits(cfg: DataConfig, labels: dict[str, np.ndarray], seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """For train, val and test: (source split, indices into it)."""
    if "all" in labels:
        train, val, test = stratified_split(labels["all"], cfg.val_fraction, cfg.test_fraction, seed)
        return {"train": ("all", train), "val": ("all", val), "test": ("all", test)}
    y = labels["train"]
    train = np.arange(len(y))
    out = {}
    if "test" in labels and len(labels["test"]):
        out["test"] = ("test", np.arange(len(labels["test"])))
    else:  # no test split of its own: carve one from train
        train, test = stratified_holdout(train, y, cfg.test_fraction, stream_seed(seed, "split.test"), "data.test_fraction")
        out["test"] = ("train", test)
    if "val" in labels and len(labels["val"]):
        out["val"] = ("val", np.arange(len(labels["val"])))
    else:  # the official train split gives up val_fraction of itself
        train, val = stratified_holdout(train, y, cfg.val_fraction, stream_seed(seed, "split.val"))
        out["val"] = ("train", val)
    out["train"] = ("train", train)
    return out


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape[-2:] == (size, size) or len(x) == 0:
        return x
    t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return t.clamp_(0, 1).numpy()


def augment_policy(cfg: DataConfig) -> str:
    return AUGMENT_AUTO.get(cfg.name, "crop_flip") if cfg.augment == "auto" else cfg.augment


def split_seed(cfg: DataConfig, seed: int) -> int:
    """The seed of the train/val/test split: `data.split_seed`, else the run's seed."""
    return cfg.split_seed if cfg.split_seed is not None else seed


def load_data(cfg: DataConfig, seed: int, channels: int | None = None) -> TaskData:
    """Build the task's tensors; normalisation statistics come from train only.

    `channels`: what the parent needs (3 for torchvision models; None: the data's own). Grayscale
    is repeated to 3 channels (a view); other mismatches are an error.
    """
    seed = split_seed(cfg, seed)
    if cfg.name == "python":  # the user's own splits, as given
        return replace(factory_task(cfg, seed, channels), augment=augment_policy(cfg))
    src = _source(cfg)
    strata = {k: _strata(v) for k, v in src.labels.items()}
    where = _splits(cfg, strata, seed)
    caps = {"train": cfg.max_train_samples, "val": cfg.max_eval_samples, "test": cfg.max_eval_samples}
    for k, (split, idx) in where.items():
        where[k] = (split, stratified_take(idx, strata[split], caps[k], stream_seed(seed, "split.cap")))
    if src.files is not None and _streamed(cfg, src, where):
        return _streamed_folder(cfg, src, where, seed, channels)
    decoded = src.fetch(where)
    x = {k: _resize(decoded[k], cfg.image_size) for k in where}
    y = {k: src.labels[split][idx] for k, (split, idx) in where.items()}
    n_channels = x["train"].shape[1]
    mean, std = _stats(x["train"])

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    def normalised(a: np.ndarray) -> torch.Tensor:
        out = t((a - mean) / std)
        if channels is not None and channels != n_channels:
            if n_channels != 1:
                raise ConfigError("data.name", f"{cfg.name} has {n_channels} channels; the parent needs {channels}")
            out = out.expand(-1, channels, -1, -1)
        return out

    n_classes = _n_classes(src)
    class_names = list(src.classes) if src.classes is not None else [str(c) for c in range(n_classes)]
    resize = None if cfg.image_size is None else ("shorter_side_crop" if cfg.name in ("imagefolder", "attributes") else "square")
    prep = Preprocessing("L" if n_channels == 1 else "RGB", list(x["train"].shape[-2:]), resize,
                         [float(v) for v in mean.ravel()], [float(v) for v in std.ravel()],
                         channels if channels is not None else n_channels, class_names)
    return TaskData(name=cfg.name, train_x=normalised(x["train"]), train_y=t(y["train"]),
                    val_x=normalised(x["val"]), val_y=t(y["val"]), test_x=normalised(x["test"]),
                    test_y=t(y["test"]), n_classes=n_classes, augment=augment_policy(cfg),
                    class_names=class_names, preprocessing=prep)


def _strata(y: np.ndarray) -> np.ndarray:
    """What splits are stratified by: the class; multi-label rows (N, attributes) are not (one stratum)."""
    return y if y.ndim == 1 else np.zeros(len(y), dtype=np.int64)


def _n_classes(src: Source) -> int:
    """Outputs the parent needs: the classes (named or seen), or the attributes of multi-label data."""
    multi = [v for v in src.labels.values() if v.ndim == 2]
    if multi:
        return int(multi[0].shape[1])
    n = int(max(int(v.max()) for v in src.labels.values() if len(v))) + 1
    return max(n, len(src.classes)) if src.classes is not None else n


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of (N, C, H, W) inputs, shaped to broadcast over them."""
    channels = range(x.shape[1])
    return (np.stack([x[:, c].mean() for c in channels])[None, :, None, None],
            np.stack([x[:, c].std() for c in channels])[None, :, None, None] + 1e-8)


def _streamed(cfg: DataConfig, src: Source, where: dict[str, tuple[str, np.ndarray]]) -> bool:
    """Whether an image folder is read when used: `data.in_memory`, else when its decoded splits would
    take more than HOLD_BYTES (estimated from one image)."""
    if cfg.in_memory is not None:
        return not cfg.in_memory
    split, idx = where["train"]
    one = _resize(src.fetch({"one": (split, idx[:1])})["one"], cfg.image_size)
    return sum(len(i) for _, i in where.values()) * one[0].size * 4 > HOLD_BYTES


def _streamed_folder(cfg: DataConfig, src: Source, where: dict[str, tuple[str, np.ndarray]], seed: int,
                     channels: int | None) -> TaskData:
    """An image folder whose images are decoded when used (DatasetRows over ImageFiles), prepared as the
    in-memory path prepares them; colour mode and normalisation from a seeded sample of train images."""
    split, idx = where["train"]
    rng = np.random.default_rng(stream_seed(seed, "split.stats"))
    pick = np.sort(rng.choice(idx, size=min(STATS_SAMPLES, len(idx)), replace=False))
    sample = _resize(src.fetch({"sample": (split, pick)})["sample"], cfg.image_size)
    mean, std = _stats(sample)
    n_channels = sample.shape[1]
    class_names = list(src.classes or [])
    prep = Preprocessing("L" if n_channels == 1 else "RGB", list(sample.shape[-2:]),
                         "shorter_side_crop" if cfg.image_size is not None else None,
                         [float(v) for v in mean.ravel()], [float(v) for v in std.ravel()],
                         channels if channels is not None else n_channels, class_names)
    if channels is not None and n_channels not in (1, channels):
        raise ConfigError("data.name", f"{cfg.name} has {n_channels} channels; the parent needs {channels}")
    xs, ys = {}, {}
    for k, (part, rows) in where.items():
        labels = src.labels[part][rows]
        xs[k] = DatasetRows(ImageFiles([src.files[part][i] for i in rows], labels, prep), f"{cfg.root} ({k})",
                            workers=cfg.workers)
        ys[k] = torch.from_numpy(np.ascontiguousarray(labels))
    n_classes = _n_classes(src)
    return TaskData(name=cfg.name, train_x=xs["train"], train_y=ys["train"], val_x=xs["val"], val_y=ys["val"],
                    test_x=xs["test"], test_y=ys["test"], n_classes=n_classes, augment=augment_policy(cfg),
                    class_names=class_names or [str(c) for c in range(n_classes)], preprocessing=prep)


def load_task(cfg: Config) -> TaskData:
    """The task's data as the configured parent needs them (grayscale repeated to 3 channels for a
    torchvision parent): what every consumer of a run's data should call."""
    from evoprune.config.archs import input_channels

    return load_data(cfg.data, cfg.seed, channels=input_channels(cfg.parent.arch))


def augment_batch(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of H/8, i.e. the train mean) and/or horizontal flip, per sample, on
    the inputs' device (`gen` is a CPU generator, so the draws are the same on any device)."""
    dev = x.device
    if policy in ("crop", "crop_flip"):
        b, c, h, w = x.shape
        pad = max(1, round(min(h, w) / 8))
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        x = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
    if policy in ("flip", "crop_flip"):
        flip = (torch.rand(len(x), generator=gen) < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
