"""Multi-label images in CelebA's layout: an image folder, an attribute file (a header of attribute names, then
one line per image: its file name and +-1 per attribute) and an optional partition file (`name split`, split
0/1/2 = train/val/test)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evoprune.config import ConfigError, DataConfig
from evoprune.data.disk_sources import image_fetch
from evoprune.data.sources import DatasetUnavailable, Source

ATTRIBUTES_FILE, PARTITION_FILE = "list_attr_celeba.txt", "list_eval_partition.txt"  # CelebA's own names
SPLITS = {"0": "train", "1": "val", "2": "test"}


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, labels (N, attributes) of 0/1 as float32) from an attribute file; a
    first line holding only the number of images (as CelebA's has) is skipped. ConfigError naming the line
    that does not fit."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if lines and len(lines[0]) == 1 and lines[0][0].isdigit():
        lines = lines[1:]
    if len(lines) < 2:
        raise ConfigError("data.attributes", f"{path}: expected a header of attribute names and one line per image")
    names, files, rows = lines[0], [], []
    for number, parts in enumerate(lines[1:], start=2):
        values = parts[1:]
        if len(values) != len(names) or any(v not in ("-1", "1", "0") for v in values):
            raise ConfigError("data.attributes", f"{path}, line {number}: expected a file name and {len(names)} "
                                                 f"values of -1/1 (or 0/1), got {' '.join(parts)[:80]!r}")
        files.append(parts[0])
        rows.append([v == "1" for v in values])
    return names, files, np.asarray(rows, dtype=np.float32)


def attributes_source(cfg: DataConfig) -> Source:
    """The images of `data.root` with their attributes; splits from the partition file when there is one,
    else one `all` split that data.task splits (seeded, not stratified)."""
    root = Path(cfg.root or "").expanduser().absolute()
    attr_path = Path(cfg.attributes).expanduser() if cfg.attributes else root / ATTRIBUTES_FILE
    if not attr_path.is_file():
        raise DatasetUnavailable(f"data.attributes={attr_path}: no such file (the attribute file, CelebA's "
                                 f"{ATTRIBUTES_FILE} layout)")
    names, files, labels = read_attributes(attr_path)
    missing = next((f for f in files if not (root / f).is_file()), None)
    if missing is not None:
        raise DatasetUnavailable(f"data.root={root}: {missing}, listed in {attr_path.name}, is not there")
    part_path = Path(cfg.partition).expanduser() if cfg.partition else root / PARTITION_FILE
    if cfg.partition and not part_path.is_file():
        raise DatasetUnavailable(f"data.partition={part_path}: no such file")
    paths = [str(root / f) for f in files]
    if not part_path.is_file():
        return Source({"all": labels}, image_fetch({"all": paths}, cfg.image_size, root), names, {"all": paths})
    split_of = {}
    for number, parts in enumerate((ln.split() for ln in part_path.read_text().splitlines() if ln.strip()), 1):
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise ConfigError("data.partition", f"{part_path}, line {number}: expected `file 0|1|2`, got "
                                                f"{' '.join(parts)[:80]!r}")
        split_of[parts[0]] = SPLITS[parts[1]]
    chosen = {s: [i for i, f in enumerate(files) if split_of.get(f) == s] for s in SPLITS.values()}
    if not chosen["train"]:
        raise ConfigError("data.partition", f"{part_path}: no image of {attr_path.name} is in split 0 (train)")
    by_split = {s: [paths[i] for i in idx] for s, idx in chosen.items()}
    return Source({s: labels[idx] for s, idx in chosen.items()},
                  image_fetch(by_split, cfg.image_size, root), names, by_split)
