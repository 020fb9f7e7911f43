"""The parent network: load user weights, reuse the run's cached parent, or train it here."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .atomic import atomic_write, write_json
from .config import Config
from .data import TaskData
from .metrics import accuracy
from .models import build_model

PARENT_WEIGHTS = "parent.pt"
PARENT_META = "parent.json"


def build_parent(cfg: Config, data_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return build_model(cfg.parent.arch, n_classes, data_shape[0], cfg.parent.width)


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict safely and strictly; mismatches are listed readably."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{p} does not hold a state_dict")
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append("missing: " + ", ".join(result.missing_keys[:8]))
    if result.unexpected_keys:
        problems.append("unexpected: " + ", ".join(result.unexpected_keys[:8]))
    if problems:
        raise ValueError(f"{p} does not fit the parent ({'; '.join(problems)})")


def _fingerprint(cfg: Config) -> dict:
    """What the cached parent depends on; a cache with another fingerprint is retrained."""
    return {"arch": cfg.parent.arch, "width": cfg.parent.width, "epochs": cfg.parent.epochs,
            "lr": cfg.parent.lr, "batch_size": cfg.parent.batch_size, "seed": cfg.seed,
            "data": cfg.data.name, "val_fraction": cfg.data.val_fraction,
            "test_fraction": cfg.data.test_fraction}


def train_parent(model: nn.Module, data: TaskData, epochs: int, lr: float, batch_size: int,
                 seed: int, progress: bool = True) -> nn.Module:
    """Plain supervised training (SGD, cosine schedule) on the train split."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(data.train_y) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    model.train()
    bar = tqdm(range(epochs), desc="training parent", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(data.train_y), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def _load_cached(model: nn.Module, cache: Path, cfg: Config) -> bool:
    """Load the run's cached parent if it was made with this config; a damaged cache is retrained
    (training is seeded, so the retrained parent is the same network)."""
    weights, meta = cache / PARENT_WEIGHTS, cache / PARENT_META
    if not (weights.is_file() and meta.is_file()):
        return False
    try:
        saved = json.loads(meta.read_text())
        if {k: v for k, v in saved.items() if k in _fingerprint(cfg)} != _fingerprint(cfg):
            return False
        candidate = copy.deepcopy(model)  # a failed load must not leave `model` half-loaded
        load_state_dict_file(candidate, weights)
    except Exception as exc:  # noqa: BLE001 - any damage to a cache we wrote means: rebuild it
        warnings.warn(f"the cached parent in {cache} is unreadable ({exc.__class__.__name__}); retraining it")
        return False
    model.load_state_dict(candidate.state_dict())
    return True


def get_parent(cfg: Config, data: TaskData, run_dir: str | Path | None,
               progress: bool = True) -> tuple[nn.Module, dict]:
    """The trained parent (eval mode) and its metadata, trained once and cached in `run_dir`."""
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation
    model = build_parent(cfg, data.input_shape, data.n_classes)
    meta = {"source": "", **_fingerprint(cfg)}
    cache = Path(run_dir) if run_dir is not None else None
    if cfg.parent.weights:
        load_state_dict_file(model, cfg.parent.weights)
        meta["source"] = str(cfg.parent.weights)
    elif cache is not None and _load_cached(model, cache, cfg):
        meta["source"] = "cached"
    else:
        train_parent(model, data, cfg.parent.epochs, cfg.parent.lr, cfg.parent.batch_size, cfg.seed, progress)
        meta["source"] = "trained"
    model.eval()
    meta["val_accuracy"] = accuracy(model, data.val_x, data.val_y)
    if cache is not None and meta["source"] != "cached":
        atomic_write(cache / PARENT_WEIGHTS, lambda fh: torch.save(model.state_dict(), fh), binary=True)
        write_json(cache / PARENT_META, meta)
    return model, meta
