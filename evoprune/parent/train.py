"""The parent network: load user weights, reuse the run's cached parent, or transfer-learn it here.

Training has two phases: `parent.frozen_epochs` epochs train only the new head with the backbone
frozen (in eval mode, so its BatchNorm statistics stay those of the pretrained weights), then
`parent.epochs` epochs fine-tune everything (SGD, Nesterov momentum, cosine schedule). Batches are
augmented as the data say (`TaskData.augment`); training runs on CUDA when fitness.device allows.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from evoprune.atomic import atomic_write, write_json
from evoprune.config import Config, ConfigError, ParentConfig
from evoprune.config.archs import input_channels
from evoprune.config.streams import stream_seed
from evoprune.data.rows import batches
from evoprune.data.task import TaskData, augment_batch, split_seed
from evoprune.metrics import accuracy, label_loss
from evoprune.parent.files import PARENT_FILES, PARENT_META, PARENT_WEIGHTS
from evoprune.parent.inputs import check_input_size
from evoprune.parent.models import build_model, classifier_of

PRETRAINED_FROZEN_EPOCHS = 3  # parent.frozen_epochs: null with ImageNet weights


def build_parent(parent_cfg: ParentConfig, data_shape: tuple[int, ...], n_classes: int,
                 pretrained: bool = False) -> nn.Module:
    """The configured architecture (the `parent` config section) for this task; ImageNet weights only if
    `pretrained` (and configured): whoever loads a state_dict over it next (a cache, parent.weights, a run)
    needs no download."""
    use_imagenet = pretrained and parent_cfg.pretrained == "imagenet"
    return build_model(parent_cfg.arch, n_classes, data_shape[0], parent_cfg.width, pretrained=use_imagenet,
                       kwargs=parent_cfg.kwargs)


def parent_channels(cfg: Config) -> int | None:
    """Input channels the configured parent needs (load_data repeats grayscale to match), or None."""
    return input_channels(cfg.parent.arch)


def frozen_epochs(cfg: Config) -> int:
    if cfg.parent.frozen_epochs is not None:
        return cfg.parent.frozen_epochs
    return PRETRAINED_FROZEN_EPOCHS if cfg.parent.pretrained != "none" else 0


def _train_device(cfg: Config) -> torch.device:
    use_cuda = cfg.fitness.device != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict safely and strictly; mismatches are listed readably."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{p} does not hold a state_dict")
    load_state_dict_checked(model, state, p)


def load_state_dict_checked(model: nn.Module, state: dict, source: str | Path) -> None:
    """Load `state` strictly; missing and unexpected keys are listed readably (ValueError)."""
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append("missing: " + ", ".join(result.missing_keys[:8]))
    if result.unexpected_keys:
        problems.append("unexpected: " + ", ".join(result.unexpected_keys[:8]))
    if problems:
        raise ValueError(f"{source} does not fit the parent ({'; '.join(problems)})")


def _fingerprint(cfg: Config) -> dict:
    """What the cached parent depends on; a cache with another fingerprint is retrained."""
    d = cfg.data
    # keys that only the user's own code has are present only when set: caches made before them stay valid
    own = {**({"kwargs": cfg.parent.kwargs} if cfg.parent.kwargs is not None else {}),
           **({"data_factory": d.factory} if d.factory is not None else {}),
           **({"in_memory": d.in_memory} if d.in_memory is not None else {}),  # a streamed folder's statistics
           **({"task": d.task} if d.task != "single" else {}),
           **{k: str(Path(v).expanduser().absolute()) for k, v in (("attributes", d.attributes),
                                                                  ("partition", d.partition)) if v is not None}}
    return {**own, "arch": cfg.parent.arch, "width": cfg.parent.width, "pretrained": cfg.parent.pretrained,
            "frozen_epochs": frozen_epochs(cfg), "epochs": cfg.parent.epochs, "patience": cfg.parent.patience,
            "lr": cfg.parent.lr, "batch_size": cfg.parent.batch_size, "seed": cfg.seed,
            "data": d.name, "data_root": str(Path(d.root).expanduser().absolute()) if d.root else None,
            "image_size": d.image_size, "augment": d.augment, "max_train_samples": d.max_train_samples,
            "max_eval_samples": d.max_eval_samples, "val_fraction": d.val_fraction,
            "test_fraction": d.test_fraction, "split_seed": split_seed(d, cfg.seed)}


# What decides which images are in the train, validation and test splits.
SPLIT_KEYS = ("data", "image_size", "max_train_samples", "max_eval_samples", "val_fraction", "test_fraction",
              "split_seed")


def split_problem(cfg: Config) -> str | None:
    """Why the parent in `parent.weights` may have been trained on this run's validation or test images,
    or None. Its split is known from evoprune's parent.json beside the weights; without one, the user
    must say so (`parent.trust_split`, or `data.split_seed` shared with the parent's training)."""
    weights = Path(cfg.parent.weights or "")
    meta = weights.with_name(PARENT_META)
    if meta.is_file():
        try:
            saved = json.loads(meta.read_text())
        except (OSError, ValueError):
            return f"{meta} is unreadable, so nothing shows which images {weights} was trained on"
        saved.setdefault("split_seed", saved.get("seed"))  # written before split seeds were recorded
        now = _fingerprint(cfg)
        differ = [k for k in SPLIT_KEYS if saved.get(k) != now[k]]
        if not differ:
            return None
        shown = ", ".join(f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in differ[:3])
        return (f"{weights} was trained on another split of the data ({shown}), so its training images include "
                f"this run's validation and test images and every score would be too high; use the same data "
                f"settings (e.g. data.split_seed={saved.get('split_seed')}) or train a parent for this split")
    if cfg.parent.trust_split or cfg.data.split_seed is not None:
        return None
    return (f"{weights} comes without evoprune's {PARENT_META} beside it, so nothing shows which images it was "
            f"trained on; if it never saw this dataset's validation or test images, set parent.trust_split=true; "
            f"if it was trained on evoprune's train split, set data.split_seed to that split's seed")


def fingerprint_mismatch(cfg: Config, directory: str | Path) -> str | None:
    """None if `directory` holds no parent or one made with `cfg`, else the first setting that differs."""
    meta = Path(directory) / PARENT_META
    if not meta.is_file():
        return None
    try:
        saved = json.loads(meta.read_text())
    except (OSError, ValueError):
        return f"{PARENT_META} (unreadable)"
    for key, value in _fingerprint(cfg).items():
        if not isinstance(saved, dict) or saved.get(key, "<absent>") != value:
            then = saved.get(key, "<absent>") if isinstance(saved, dict) else "<absent>"
            return f"{key}: {then!r} there, {value!r} now"
    return None


def train_epochs(model: nn.Module, params: list[nn.Parameter], data: TaskData, epochs: int, lr: float,
                 batch_size: int, gen: torch.Generator, device: torch.device, desc: str, progress: bool,
                 head_only: bool, patience: int = 0) -> int:
    """SGD (Nesterov, cosine schedule) over `params` for at most `epochs` epochs of the train split.

    With `patience`, training stops once validation accuracy has not improved for that many epochs,
    and the model keeps the weights of its best epoch. Returns the epochs trained."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(data.train_y) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    best_acc, best_state, since_best, trained = -1.0, None, 0, 0
    for _ in bar:
        model.train()
        if head_only:  # a frozen backbone keeps its BatchNorm statistics
            model.eval()
            classifier_of(model).train()
        order = torch.randperm(len(data.train_y), generator=gen)
        index_batches = order.split(batch_size)
        # in memory: indexed; a Dataset's items: read ahead by DataLoader workers while this trains
        for idx, x in zip(index_batches, batches(data.train_x, index_batches, pin=device.type == "cuda")):
            if data.augment != "none":
                x = augment_batch(x, data.augment, gen)
            loss = label_loss(model(x.to(device)), data.train_y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        trained += 1
        if not (progress or patience):
            continue
        val_acc = accuracy(model, data.val_x, data.val_y)  # eval mode; the next epoch resets the modes
        bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{val_acc:.4f}")
        if not patience:
            continue
        if val_acc > best_acc:
            best_acc, since_best = val_acc, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    if patience and best_state is not None:
        model.load_state_dict(best_state)
    return trained


def train_parent(model: nn.Module, data: TaskData, epochs: int, lr: float, batch_size: int,
                 seed: int, progress: bool = True, frozen_epochs: int = 0,
                 device: torch.device | str = "cpu", patience: int = 0) -> tuple[nn.Module, int]:
    """Transfer learning on the train split: `frozen_epochs` training the head alone (backbone frozen),
    then at most `epochs` fine-tuning everything, stopping early after `patience` epochs without a
    better validation accuracy (0: never). Returns the model (on the CPU, in eval mode, all trainable)
    and the number of full fine-tune epochs that ran."""
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    model.to(device)
    if frozen_epochs > 0:
        head = list(classifier_of(model).parameters())
        head_ids = {id(p) for p in head}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_ids)
        try:
            train_epochs(model, head, data, frozen_epochs, lr, batch_size, gen, device, "training head (frozen)",
                         progress, head_only=True)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
    trained = train_epochs(model, list(model.parameters()), data, epochs, lr, batch_size, gen, device,
                           "training parent", progress, head_only=False, patience=patience)
    return model.cpu().eval(), trained


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
               progress: bool = True, reuse: bool = True,
               check: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, dict]:
    """The trained parent (eval mode) and its metadata, trained once and cached in `run_dir`
    (`reuse=False`: retrained even if the cache fits). `check(model)`: run on a copy of the architecture
    before any weights are loaded or trained (e.g. that it can be pruned); it raises to stop."""
    torch.manual_seed(stream_seed(cfg.seed, "torch.global"))  # the fresh head's initialisation
    model = build_parent(cfg.parent, data.input_shape, data.n_classes)
    check_input_size(model, data, cfg.parent.arch)
    if check is not None:
        with torch.random.fork_rng(devices=[]):  # the check draws nothing that training would
            check(copy.deepcopy(model))
    meta = {"source": "", **_fingerprint(cfg)}
    cache = Path(run_dir) if run_dir is not None else None
    if cfg.parent.weights:
        problem = split_problem(cfg)
        if problem:
            raise ConfigError("parent.weights", problem)
        load_state_dict_file(model, cfg.parent.weights)
        meta["source"] = str(cfg.parent.weights)
    elif reuse and cache is not None and _load_cached(model, cache, cfg):
        meta["source"] = "cached"
    else:
        if cfg.parent.pretrained != "none":
            torch.manual_seed(stream_seed(cfg.seed, "torch.global"))
            model = build_parent(cfg.parent, data.input_shape, data.n_classes, pretrained=True)
        model, meta["epochs_trained"] = train_parent(
            model, data, cfg.parent.epochs, cfg.parent.lr, cfg.parent.batch_size, stream_seed(cfg.seed, "parent.batches"), progress,
            frozen_epochs=frozen_epochs(cfg), device=_train_device(cfg), patience=cfg.parent.patience)
        meta["source"] = "trained"
    model.eval()
    meta["val_accuracy"] = accuracy(model, data.val_x, data.val_y)
    if cache is not None and meta["source"] != "cached":
        atomic_write(cache / PARENT_WEIGHTS, lambda fh: torch.save(model.state_dict(), fh), binary=True)
        write_json(cache / PARENT_META, meta)
    return model, meta


# -- `train-parent`: a directory holding just the parent, reused by searches ---------------------------


def holds_only_parent(directory: str | Path) -> bool:
    """True for a directory that `train-parent` made: parent.pt / parent.json and nothing else."""
    d = Path(directory)
    if not d.is_dir():
        return False
    names = {p.name for p in d.iterdir()}
    return bool(names) and names <= set(PARENT_FILES)


def parent_dir_problem(out: str | Path, cfg: Config, force: bool) -> str | None:
    """Why a parent trained with `cfg` may not go into (or be reused from) `out`, or None."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a directory"
    if force or not out.exists():
        return None
    names = sorted(p.name for p in out.iterdir())
    others = [n for n in names if n not in PARENT_FILES]
    if others:
        return (f"--out {out} is not empty (it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
                f"choose another directory or pass --force (the parent files are replaced, nothing else)")
    mismatch = fingerprint_mismatch(cfg, out)
    if mismatch:
        return (f"--out {out} holds a parent made with other settings ({mismatch}); pass --force to "
                f"replace it, or choose another directory")
    return None


def train_parent_into(cfg: Config, out: str | Path, force: bool = False,
                      progress: bool = True) -> tuple[nn.Module, dict, TaskData]:
    """Load the data, transfer-learn the parent (or reuse the one in `out` made with the same
    settings, unless `force`), and save parent.pt + parent.json in `out`."""
    from evoprune.data.task import load_task

    data = load_task(cfg)
    model, meta = get_parent(cfg, data, out, progress=progress, reuse=not force)
    return model, meta, data
