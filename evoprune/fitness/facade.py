"""Fitness, the facade: genomes (or any model) in, Objectives out; a cache over the chosen evaluator."""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from evoprune.config import Config
from evoprune.config.streams import stream_seed
from evoprune.data.task import TaskData, load_data
from evoprune.fitness.evaluators import choose_evaluator
from evoprune.fitness.precision import check_channels_last, resolve_device
from evoprune.fitness.recipe import finetune_and_recalibrate
from evoprune.fitness.scoring import score, score_before
from evoprune.fitness.scoring import val_accuracy as task_val_accuracy
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.objectives import Objectives
from evoprune.parent.train import get_parent, parent_channels
from evoprune.pruning.importance import build_space
from evoprune.pruning.materialise import materialise
from evoprune.pruning.space import SearchSpace

__all__ = ["Fitness", "build_fitness"]


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

    def parent_summary(self) -> dict:
        return {"accuracy": self.parent_accuracy, "n_params": self.parent_n_params, "macs": self.parent_macs}


def build_fitness(cfg: Config, run_dir: str | Path | None = None, progress: bool = True,
                  data: TaskData | None = None) -> Fitness:
    """Data loaded (unless given), parent trained (or loaded / cached in `run_dir`), search space traced."""
    torch.manual_seed(stream_seed(cfg.seed, "torch.global"))
    if data is None:
        data = load_data(cfg.data, cfg.seed, channels=parent_channels(cfg))  # grayscale -> 3 for torchvision
    parent, meta = get_parent(cfg, data, run_dir, progress=progress)
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "space.calibration"))
    calib = torch.randperm(len(data.train_y), generator=gen)[:256]
    space = build_space(parent, data.example_input(), cfg.space, cfg.population.criteria,
                        data.train_x[calib], data.train_y[calib])
    return Fitness(cfg, data, parent, space, meta)
