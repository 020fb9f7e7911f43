"""Sequential evaluator: materialise each genome structurally, KD fine-tune it, score it."""
from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from ..distill import hinton_kd
from ..genome import Genome
from ..objectives import Objectives
from ..prune import materialise

if TYPE_CHECKING:
    from ..fitness import Fitness


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def kd_finetune(model: nn.Module, fitness: "Fitness") -> tuple[float, bool]:
    """Short KD fine-tune on the fixed batch plan; returns (mean loss of the last steps, finite)."""
    cfg = fitness.cfg.fitness
    if cfg.steps == 0:
        return float("nan"), True
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    model.train()
    tail, losses = max(1, cfg.steps // 5), []
    for step in range(cfg.steps):
        x, y, t = fitness.batch(step)
        loss = hinton_kd(model(x), t, y, cfg.temperature, cfg.alpha)
        # A diverged individual stops here and is scored worst, rather than poisoning the run.
        if not torch.isfinite(loss):
            return float("nan"), False
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step >= cfg.steps - tail:
            losses.append(loss.detach())
    model.eval()
    return float(torch.stack(losses).mean()), True


class SequentialEvaluator:
    """One individual at a time, in its real pruned shape (exact for any architecture)."""

    kind = "sequential"

    def __init__(self, fitness: "Fitness"):
        self.fitness = fitness

    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        out = []
        for genome in genomes:
            start = time.perf_counter()
            model = materialise(self.fitness.parent, genome, self.fitness.example_input)
            kd_loss, finite = kd_finetune(model, self.fitness)
            if not finite:
                warnings.warn(f"fine-tune of {genome.key()} produced a non-finite loss; scored as worst")
            out.append(self.fitness.score(model, kd_loss, finite, time.perf_counter() - start))
            if on_done:
                on_done(1)
        return out
