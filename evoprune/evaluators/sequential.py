"""Sequential evaluator: materialise each genome structurally, KD fine-tune it, score it."""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from ..amp import Scaler, autocast
from ..config import FitnessConfig
from ..distill import hinton_kd
from ..genome import Genome
from ..objectives import Objectives
from ..prune import materialise

if TYPE_CHECKING:
    from ..fitness import Fitness


def make_optimizer(params: Iterable[torch.Tensor], cfg: FitnessConfig) -> torch.optim.Optimizer:
    """The fine-tune optimiser; all are elementwise, so the batched (stacked) form is exact too."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def kd_finetune(model: nn.Module, fitness: "Fitness", steps: int | None = None) -> tuple[float, bool]:
    """Short KD fine-tune on the fixed batch plan; returns (mean loss of the last steps, finite)."""
    cfg = fitness.cfg.fitness
    steps = cfg.steps if steps is None else steps
    if steps == 0:
        return float("nan"), True
    opt = make_optimizer(model.parameters(), cfg)
    scaler = Scaler(cfg, fitness.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    tail, losses = max(1, steps // 5), []
    for step in range(steps):
        x, y, t = fitness.batch(step)
        with autocast(cfg, fitness.device):
            out = model(x)
        loss = hinton_kd(out.float(), t, y, cfg.temperature, cfg.alpha)
        # A diverged individual stops here and is scored worst, rather than poisoning the run.
        if not torch.isfinite(loss):
            return float("nan"), False
        opt.zero_grad(set_to_none=True)
        scaler.backward(loss)
        if cfg.grad_clip:
            scaler.unscale(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        if step >= steps - tail:
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
