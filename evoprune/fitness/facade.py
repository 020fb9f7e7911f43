"""Fitness as a library: genomes (or any model) in, Objectives out; teacher outputs computed once."""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from evoprune.fitness.precision import check_channels_last, memory_format
from evoprune.config import Config
from evoprune.config.streams import stream_seed
from evoprune.data.task import TaskData, load_data
from evoprune.fitness.evaluators import choose_evaluator
from evoprune.fitness.evaluators.sequential import finetune_and_recalibrate
from evoprune.genome import Genome
from evoprune.pruning.importance import build_space
from evoprune.metrics import count_macs, count_params, logits_of, top1
from evoprune.objectives import Objectives
from evoprune.parent.train import get_parent, parent_channels
from evoprune.pruning.materialise import materialise
from evoprune.pruning.space import SearchSpace


def _move(value, device: torch.device):
    """Tensors (also inside lists, tuples and dicts) moved to `device`; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("fitness.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


class Fitness:
    """Evaluates genomes of one parent: short KD fine-tune, validation accuracy, size.

    Fitness depends only on the genome and the config's seed (every individual sees the same
    fixed batches), so results are cached by genome key and reproducible in any order.
    """

    def __init__(self, cfg: Config, data: TaskData, parent: nn.Module, space: SearchSpace,
                 parent_meta: dict | None = None):
        self.cfg = cfg
        self.data = data
        self.space = space
        self.device = resolve_device(cfg.fitness.device)
        check_channels_last(cfg.fitness, self.device)
        self.parent = parent.to(self.device).eval()
        self.parent_meta = dict(parent_meta or {})
        self.example_input = data.example_input().to(self.device)
        self.cache: dict[str, Objectives] = {}
        self._stage(cfg)
        self.parent_n_params = count_params(self.parent)
        self.parent_macs = count_macs(self.parent, self.example_input)
        self.parent_accuracy = self.val_accuracy(self.parent)
        self.evaluator, self.evaluator_info = choose_evaluator(self)

    # Not staged data: what `from_staged` takes as arguments or rebuilds (every other attribute is).
    _NOT_STAGED = frozenset({"cfg", "data", "space", "device", "parent", "parent_meta", "cache", "evaluator",
                             "evaluator_info"})

    def staged(self) -> dict:
        """The staged pieces (fine-tune subset, batch plan, teacher outputs, validation split, parent sizes)
        on the CPU: with cfg, parent and space, all that `from_staged` needs (e.g. on a Ray worker)."""
        return {k: _move(v, torch.device("cpu")) for k, v in vars(self).items() if k not in self._NOT_STAGED}

    @classmethod
    def from_staged(cls, cfg: Config, staged: dict, parent: nn.Module, space: SearchSpace) -> "Fitness":
        """A Fitness from another one's `staged()` pieces, on `cfg.fitness.device`: no data loading and no
        teacher pass, so every copy scores against the very same teacher outputs. `data` is None."""
        self = cls.__new__(cls)
        self.cfg, self.data, self.space, self.parent_meta, self.cache = cfg, None, space, {}, {}
        self.device = resolve_device(cfg.fitness.device)
        check_channels_last(cfg.fitness, self.device)
        self.parent = parent.to(self.device).eval()
        for name, value in staged.items():
            setattr(self, name, _move(value, self.device))
        self.evaluator, self.evaluator_info = choose_evaluator(self)
        return self

    def _stage(self, cfg: Config) -> None:
        """Fix the fine-tune subset, its batch plan and the teacher's outputs, on the device, once."""
        gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "fitness.subset"))
        n_train = len(self.data.train_y)
        subset = torch.randperm(n_train, generator=gen)[: min(cfg.fitness.finetune_samples, n_train)]
        self.ft_x = memory_format(cfg.fitness, self.data.train_x[subset].to(self.device))
        self.ft_y = self.data.train_y[subset].to(self.device)
        self.ft_teacher = logits_of(self.parent, self.ft_x).to(self.device)
        # Batch plan: successive shuffles of the subset, cut into batches; fine-tune step k uses row
        # k, and adaptive-BN recalibration uses the first rows.
        batch = min(cfg.fitness.batch_size, len(subset))
        rows = max(cfg.fitness.steps, cfg.fitness.adaptive_bn)
        order = [torch.randperm(len(subset), generator=gen) for _ in range(math.ceil(rows * batch / len(subset)))]
        flat = torch.cat(order)[: rows * batch] if order else torch.zeros(0, dtype=torch.long)
        self.plan = flat.view(rows, batch).to(self.device)
        # A capped validation set is a seeded random subset: the splits are stored in source order,
        # which for class-by-class sources (ImageFolder) would score the first classes only.
        n_all = len(self.data.val_y)
        n_val = min(cfg.fitness.val_samples or n_all, n_all)
        pick = torch.arange(n_all) if n_val == n_all else torch.randperm(n_all, generator=gen)[:n_val].sort().values
        self.val_x = memory_format(cfg.fitness, self.data.val_x[pick].to(self.device))
        self.val_y = self.data.val_y[pick].to(self.device)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fine-tune batch number `step`: inputs, labels, teacher logits (all on the device)."""
        idx = self.plan[step]
        return self.ft_x[idx], self.ft_y[idx], self.ft_teacher[idx]

    def _objectives(self, n_params: int, macs: int, accuracy: float, kd_loss: float, finite: bool,
                    seconds: float) -> Objectives:
        params_ratio, macs_ratio = n_params / self.parent_n_params, macs / self.parent_macs
        size_ratio = params_ratio if self.cfg.search.size_metric == "params" else macs_ratio
        return Objectives(accuracy if finite else 0.0, n_params, macs, size_ratio, params_ratio, macs_ratio,
                          kd_loss, seconds, "ok" if finite else "nonfinite")

    def score(self, model: nn.Module, kd_loss: float, finite: bool, seconds: float,
              scratch: bool = False) -> Objectives:
        """Objectives of a (fine-tuned) model: validation accuracy and size against the parent.
        `scratch`: the model is discarded afterwards (counting may then mark it)."""
        acc = self.val_accuracy(model) if finite else 0.0
        return self._objectives(count_params(model), count_macs(model, self.example_input, scratch), acc, kd_loss,
                                finite, seconds)

    def val_accuracy(self, model: nn.Module) -> float:
        """Top-1 of `model` on the fixed validation subset the search scores on."""
        return top1(logits_of(model, self.val_x), self.val_y.cpu())

    def size_objectives(self, genome: Genome, accuracy: float, kd_loss: float, finite: bool,
                        seconds: float) -> Objectives:
        """Objectives of a genome whose accuracy was measured elsewhere (e.g. masked, batched)."""
        model = materialise(self.parent, genome, self.example_input)
        return self._objectives(count_params(model), count_macs(model, self.example_input, True), accuracy, kd_loss,
                                finite, seconds)

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

    def evaluate_model(self, model: nn.Module, finetune: bool = False) -> Objectives:
        """Objectives of any model for this task; `finetune` runs a genome's recipe (KD fine-tune, adaptive BN) on a copy."""
        start = time.perf_counter()
        model = copy.deepcopy(model).to(self.device) if finetune else model.to(self.device)
        kd_loss, finite = finetune_and_recalibrate(model, self) if finetune else (float("nan"), True)
        return self.score(model, kd_loss, finite, time.perf_counter() - start)

    def subnet(self, genome: Genome) -> nn.Module:
        """The pruned (not fine-tuned) model of a genome."""
        self.space.validate(genome)
        return materialise(self.parent, genome, self.example_input)

    def parent_summary(self) -> dict:
        return {"accuracy": self.parent_accuracy, "n_params": self.parent_n_params, "macs": self.parent_macs}


def build_fitness(cfg: Config, run_dir: str | Path | None = None, progress: bool = True,
                  data: TaskData | None = None) -> Fitness:
    """Data loaded (unless given), parent trained (or loaded / cached in `run_dir`), search space traced."""
    torch.manual_seed(cfg.seed)
    if data is None:
        data = load_data(cfg.data, cfg.seed, channels=parent_channels(cfg))  # grayscale -> 3 for torchvision
    parent, meta = get_parent(cfg, data, run_dir, progress=progress)
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "space.calibration"))
    calib = torch.randperm(len(data.train_y), generator=gen)[:256]
    space = build_space(parent, data.example_input(), cfg.space, cfg.population.criteria,
                        data.train_x[calib], data.train_y[calib])
    return Fitness(cfg, data, parent, space, meta)
