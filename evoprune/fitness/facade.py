"""Fitness, the facade: genomes (or any model) in, Objectives out; a cache over the chosen evaluator."""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from evoprune.config import Config, ConfigError, load_config
from evoprune.config.streams import stream_seed
from evoprune.data.task import TaskData, load_data
from evoprune.data.user import user_task
from evoprune.fitness.evaluators import choose_evaluator
from evoprune.fitness.precision import check_channels_last, resolve_device
from evoprune.fitness.recipe import finetune_and_recalibrate
from evoprune.fitness.scoring import score, score_before
from evoprune.fitness.scoring import val_accuracy as task_val_accuracy
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.metrics import is_multilabel
from evoprune.objectives import Objectives
from evoprune.parent.train import get_parent, parent_channels
from evoprune.pruning.groups import use_custom_layers
from evoprune.pruning.importance import build_space
from evoprune.pruning.materialise import materialise
from evoprune.pruning.probe import prune_problem
from evoprune.pruning.space import SearchSpace

__all__ = ["Fitness", "build_fitness", "user_config", "user_parent_and_data"]

CALIBRATION_SAMPLES = 256  # train rows the space's data-dependent rankings (Taylor) are computed on


class Fitness:
    """Evaluates genomes of one parent: short KD fine-tune, validation accuracy, size.

    Fitness depends only on the genome and the config's seed (every individual sees the same
    fixed batches, staged once in `task`), so results are cached by genome key and reproducible in
    any order. The evaluator is chosen from `cfg.evaluator` (`evaluator_info` says why).
    """

    def __init__(self, cfg: Config, data: TaskData, parent: nn.Module, space: SearchSpace,
                 parent_meta: dict | None = None):
        self.cfg = cfg
        self.data = data
        self.space = space
        device = resolve_device(cfg.fitness.device)
        check_channels_last(cfg.fitness, device)
        self.parent = parent.to(device).eval()
        self.parent_meta = dict(parent_meta or {})
        self.cache: dict[str, Objectives] = {}
        self.task = StagedTask.build(cfg, data, self.parent, device)
        self.parent_accuracy = self.val_accuracy(self.parent)
        if cfg.evaluator.backend == "ray":  # its workers choose their local evaluator by the same rule
            from evoprune.fitness.evaluators.ray import RayEvaluator  # Ray is optional: imported only when asked for

            self.evaluator = RayEvaluator(self.task, self.parent, space, cfg.evaluator, cfg.parent)
            self.evaluator_info = self.evaluator.info
        else:
            self.evaluator, self.evaluator_info = choose_evaluator(self.task, self.parent, space, cfg.evaluator)

    @property
    def device(self) -> torch.device:
        return self.task.device

    @property
    def example_input(self) -> torch.Tensor:
        return self.task.example_input

    @property
    def parent_n_params(self) -> int:
        return self.task.parent_n_params

    @property
    def parent_macs(self) -> int:
        return self.task.parent_macs

    def __call__(self, genomes: Iterable[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        """Objectives for each genome (in order); already-evaluated genomes come from the cache."""
        genomes = list(genomes)
        for g in genomes:
            self.space.validate(g)
        todo: dict[str, Genome] = {}
        for g in genomes:
            if g.key() not in self.cache:
                todo.setdefault(g.key(), g)
        if todo:
            results = self.evaluator.evaluate(list(todo.values()), on_done)
            self.cache.update(zip(todo, results))
        return [self.cache[g.key()] for g in genomes]

    def val_accuracy(self, model: nn.Module) -> float:
        """Top-1 of `model` on the fixed validation subset the search scores on."""
        return task_val_accuracy(self.task, model)

    def evaluate_model(self, model: nn.Module, finetune: bool = False) -> Objectives:
        """Objectives of any model for this task; `finetune` runs a genome's recipe (KD fine-tune, adaptive BN) on a copy."""
        start = time.perf_counter()
        if not finetune:
            return score(self.task, model.to(self.device), float("nan"), True, time.perf_counter() - start)
        model = copy.deepcopy(model).to(self.device)
        before = score_before(self.task, model)
        kd_loss, finite = finetune_and_recalibrate(model, self.task, self.parent)
        return score(self.task, model, kd_loss, finite, time.perf_counter() - start, accuracy_before=before)

    def subnet(self, genome: Genome) -> nn.Module:
        """The pruned (not fine-tuned) model of a genome."""
        self.space.validate(genome)
        return materialise(self.parent, genome, self.example_input)

    @classmethod
    def from_model(cls, model: nn.Module, train: Any, val: Any, config: Config | str | Path | None = None, *,
                   customized_pruners: dict | None = None, unwrapped_parameters: dict | None = None) -> "Fitness":
        """A Fitness of any trained classifier `model` (deep-copied; never trained, changed or moved) on your
        own data: `train` and `val` are map-style Datasets of (input tensor, class index) items or (x, y)
        tensor pairs. Only the fitness' subsets are read (`fitness.finetune_samples` train rows, at least
        256, and `fitness.val_samples` validation rows), by index, so a Dataset's length costs nothing.
        `config`: a Config, a YAML path, or None for the defaults (its data and parent sections are unused).
        `customized_pruners` ({layer type or module: torch-pruning pruner}) and `unwrapped_parameters`
        ({parameter or its name: dim}) go to torch-pruning for layers it does not know, for this process
        (see `evoprune.pruning.use_custom_layers`)."""
        return user_fitness(model, train, val, config, customized_pruners, unwrapped_parameters)

    def parent_summary(self) -> dict:
        return {"accuracy": self.parent_accuracy, "n_params": self.parent_n_params, "macs": self.parent_macs}


def build_fitness(cfg: Config, run_dir: str | Path | None = None, progress: bool = True,
                  data: TaskData | None = None) -> Fitness:
    """Data loaded (unless given), parent trained (or loaded / cached in `run_dir`), search space traced."""
    torch.manual_seed(stream_seed(cfg.seed, "torch.global"))
    if data is None:
        data = load_data(cfg.data, cfg.seed, channels=parent_channels(cfg))  # grayscale -> 3 for torchvision
    parent, meta = get_parent(cfg, data, run_dir, progress=progress,
                              check=lambda model: check_prunable(model, data.example_input(2), cfg))
    return Fitness(cfg, data, parent, trace_space(cfg, data, parent), meta)


def check_prunable(model: nn.Module, example: torch.Tensor, cfg: Config) -> None:
    """ConfigError, before any training, where torch-pruning cannot prune the model (naming the layers)."""
    problem = prune_problem(model, example, cfg.space)
    if problem:
        raise ConfigError("space.ignore" if cfg.space.ignore and "space.ignore" not in problem else "parent.arch",
                          problem)


def trace_space(cfg: Config, data: TaskData, parent: nn.Module) -> SearchSpace:
    """The parent's search space, its data-dependent rankings (Taylor) scored on a seeded train batch."""
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "space.calibration"))
    calib = torch.randperm(len(data.train_y), generator=gen)[:CALIBRATION_SAMPLES]
    return build_space(parent, data.example_input(), cfg.space, cfg.population.criteria,
                       data.train_x[calib], data.train_y[calib])


def user_fitness(model: nn.Module, train: Any, val: Any, config: Config | str | Path | None = None,
                 customized_pruners: dict | None = None, unwrapped_parameters: dict | None = None) -> Fitness:
    """`Fitness.from_model`: a Fitness of a user's trained classifier on their own train and val data."""
    cfg = user_config(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is {type(model).__name__}, expected a torch.nn.Module")
    if (customized_pruners or unwrapped_parameters) and cfg.evaluator.backend == "ray":
        # the hooks live in this process; Ray's workers would trace without them
        raise ValueError("customized_pruners and unwrapped_parameters reach this process's evaluators only, "
                         "not Ray's workers: use evaluator.backend=local")
    use_custom_layers(model, customized_pruners, unwrapped_parameters)  # none given: an earlier call's are cleared
    parent, data, meta = user_parent_and_data(model, train, val, cfg)
    return Fitness(cfg, data, parent, trace_space(cfg, data, parent), meta)


def user_config(config: Config | str | Path | None) -> Config:
    """A Config from a Config, a YAML path or None (the defaults); TypeError for anything else."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    cfg = config if config is not None else load_config()
    if not isinstance(cfg, Config):
        raise TypeError(f"config is {type(cfg).__name__}, expected an evoprune Config, a YAML path or None")
    return cfg


def user_parent_and_data(model: nn.Module, train: Any, val: Any, cfg: Config) -> tuple[nn.Module, TaskData, dict]:
    """A copy of the user's model (CPU, eval; theirs is neither changed nor moved), the fitness' rows of
    their data staged as TaskData, and the parent's metadata; one-line errors for what does not fit."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is {type(model).__name__}, expected a torch.nn.Module")
    torch.manual_seed(stream_seed(cfg.seed, "torch.global"))
    data = user_task(train, val, max(cfg.fitness.finetune_samples, CALIBRATION_SAMPLES),
                     cfg.fitness.val_samples or None, cfg.seed)
    parent = copy.deepcopy(model).cpu().eval()
    probe = data.train_x[:2]
    try:
        with torch.no_grad():
            logits = parent(probe)
    except Exception as err:  # the user's forward: its own error type, re-raised with what it was given
        raise ValueError(f"model failed on a batch of train inputs of shape {tuple(probe.shape)}: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(probe):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return class logits of shape (batch, classes); on a batch of {len(probe)} it "
                         f"returned {shape}")
    if is_multilabel(data.train_y) and logits.shape[1] != data.n_classes:
        raise ValueError(f"model has {logits.shape[1]} outputs but the data have {data.n_classes} attributes per row")
    if logits.shape[1] < data.n_classes:
        raise ValueError(f"model has {logits.shape[1]} outputs but the data have labels up to {data.n_classes - 1}")
    meta = {"source": "user model", "class": f"{type(model).__module__}.{type(model).__qualname__}"}
    problem = prune_problem(copy.deepcopy(parent), probe, cfg.space)
    if problem:
        raise ValueError(problem)
    return parent, replace(data, n_classes=int(logits.shape[1])), meta
