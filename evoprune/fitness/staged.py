"""StagedTask: the data every fitness evaluation of one parent shares, built once, shipped as is."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from evoprune.config import Config, FitnessConfig
from evoprune.config.streams import stream_seed
from evoprune.data.task import TaskData
from evoprune.data.user import STREAMED_VAL_SAMPLES
from evoprune.fitness.precision import memory_format
from evoprune.metrics import count_macs, count_params, logits_of


# The tensor fields: what `to` moves (every other field is plain data).
TENSOR_FIELDS = ("ft_x", "ft_y", "ft_teacher", "plan", "val_x", "val_y", "example_input")


@dataclass(frozen=True, eq=False)
class StagedTask:
    """The fine-tune subset and its batch plan, the teacher's outputs on it, the validation split the
    search scores on, the parent's sizes, and the settings scoring needs: plain data with explicit
    fields (frozen: nothing is added or changed after `build`), so exactly this travels to a worker.

    Every individual sees the same fixed batches: fitness depends only on the genome and the seed.
    """

    cfg: FitnessConfig  # the fine-tune recipe's settings (kd, steps, precision, ...)
    size_metric: str  # `params` or `macs`: which ratio is the size objective
    seed: int  # the run's seed (KD adapters, the batched evaluator's probe subnets)
    device: torch.device  # where every tensor below lives
    ft_x: torch.Tensor  # (N, ...) fine-tune inputs (in the configured memory format)
    ft_y: torch.Tensor  # (N,) their labels
    ft_teacher: torch.Tensor  # (N, C) the parent's logits on them
    plan: torch.Tensor  # (rows, batch) long: fine-tune step k (and adaptive-BN batch k) uses ft rows plan[k]
    val_x: torch.Tensor  # validation inputs the search scores on
    val_y: torch.Tensor  # their labels
    example_input: torch.Tensor  # (1, ...) for tracing, materialising and counting MACs
    parent_n_params: int
    parent_macs: int

    @classmethod
    def build(cls, cfg: Config, data: TaskData, parent: nn.Module, device: torch.device) -> "StagedTask":
        """Fix the fine-tune subset, its batch plan, the teacher's outputs and the validation subset, on
        `device`, once. `parent` is the teacher, already on `device` and in eval mode."""
        fcfg = cfg.fitness
        example_input = data.example_input().to(device)
        gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "fitness.subset"))
        n_train = len(data.train_y)
        subset = torch.randperm(n_train, generator=gen)[: min(fcfg.finetune_samples, n_train)]
        ft_x = memory_format(fcfg, data.train_x[subset].to(device))
        ft_y = data.train_y[subset].to(device)
        ft_teacher = logits_of(parent, ft_x).to(device)
        # Batch plan: successive shuffles of the subset, cut into batches; fine-tune step k uses row
        # k, and adaptive-BN recalibration uses the first rows.
        batch = min(fcfg.batch_size, len(subset))
        rows = max(fcfg.steps, fcfg.adaptive_bn)
        order = [torch.randperm(len(subset), generator=gen) for _ in range(math.ceil(rows * batch / len(subset)))]
        flat = torch.cat(order)[: rows * batch] if order else torch.zeros(0, dtype=torch.long)
        plan = flat.view(rows, batch).to(device)
        # A capped validation set is a seeded random subset: the splits are stored in source order,
        # which for class-by-class sources (ImageFolder) would score the first classes only.
        n_all = len(data.val_y)
        # a split read on demand is scored on a seeded subset, not read whole, unless asked for
        whole = n_all if isinstance(data.val_x, torch.Tensor) else STREAMED_VAL_SAMPLES
        n_val = min(fcfg.val_samples or whole, n_all)
        pick = torch.arange(n_all) if n_val == n_all else torch.randperm(n_all, generator=gen)[:n_val].sort().values
        val_x = memory_format(fcfg, data.val_x[pick].to(device))
        val_y = data.val_y[pick].to(device)
        return cls(cfg=fcfg, size_metric=cfg.search.size_metric, seed=cfg.seed, device=device,
                   ft_x=ft_x, ft_y=ft_y, ft_teacher=ft_teacher, plan=plan, val_x=val_x, val_y=val_y,
                   example_input=example_input, parent_n_params=count_params(parent),
                   parent_macs=count_macs(parent, example_input))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fine-tune batch number `step`: inputs, labels, teacher logits (all on the device)."""
        idx = self.plan[step]
        return self.ft_x[idx], self.ft_y[idx], self.ft_teacher[idx]

    @property
    def n_classes(self) -> int:
        return int(self.ft_teacher.shape[-1])

    def tensors(self) -> list[torch.Tensor]:
        """The staged tensors, in field order."""
        return [getattr(self, name) for name in TENSOR_FIELDS]

    def to(self, device: torch.device) -> "StagedTask":
        """The same task with its tensors on `device` (self when they are there already)."""
        if device == self.device:
            return self
        return dataclasses.replace(self, device=device, **{name: getattr(self, name).to(device)
                                                          for name in TENSOR_FIELDS})

    def cpu(self) -> "StagedTask":
        """The CPU form, for shipping (e.g. into Ray's object store)."""
        return self.to(torch.device("cpu"))

    def with_cfg(self, cfg: FitnessConfig) -> "StagedTask":
        """The same staged data with other recipe settings (the tensors are shared, not copied)."""
        return dataclasses.replace(self, cfg=cfg)
