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


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, fitness: "Fitness", batches: int,
                   forward: Callable[[torch.Tensor], object] | None = None) -> None:
    """Adaptive BN (EagleEye): replace BN running statistics by their average over `batches` train
    batches. Momentum 1/k at batch k gives the exact cumulative mean in both evaluators."""
    layers = bn_layers(model)
    if not layers or batches == 0:
        return
    saved = [m.momentum for m in layers]
    model.train()
    for k in range(batches):
        for m in layers:
            m.momentum = 1.0 / (k + 1)  # k = 0 overwrites the stale statistics
        x, _, _ = fitness.batch(k)
        (forward or model)(x)
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
    model.eval()


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
    finite = torch.ones((), dtype=torch.bool, device=fitness.device)
    for step in range(steps):
        x, y, t = fitness.batch(step)
        with autocast(cfg, fitness.device):
            out = model(x)
        loss = hinton_kd(out.float(), t, y, cfg.temperature, cfg.alpha)
        # A tensor flag, not an `if`: no host synchronisation inside the step loop. A diverged
        # individual is scored worst at the end rather than poisoning the run.
        finite &= torch.isfinite(loss)
        opt.zero_grad(set_to_none=True)
        scaler.backward(loss)
        if cfg.grad_clip:
            scaler.unscale(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        if step >= steps - tail:
            losses.append(loss.detach())
    model.eval()
    if not bool(finite):
        return float("nan"), False
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
            if finite:
                recalibrate_bn(model, self.fitness, self.fitness.cfg.fitness.adaptive_bn)
            if not finite:
                warnings.warn(f"fine-tune of {genome.key()} produced a non-finite loss; scored as worst")
            out.append(self.fitness.score(model, kd_loss, finite, time.perf_counter() - start))
            if on_done:
                on_done(1)
        return out
