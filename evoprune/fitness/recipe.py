"""The fitness fine-tune recipe: KD fine-tune on a StagedTask's fixed batches, then adaptive BN."""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from evoprune.config import FitnessConfig
from evoprune.config.vocab import FEATURE_KD_LOSSES
from evoprune.fitness.losses import KDLoss, default_feature_layers, teacher_feature_targets
from evoprune.fitness.precision import Scaler, autocast, channels_last_on
from evoprune.fitness.staged import StagedTask


def make_optimizer(params: Iterable[torch.Tensor], cfg: FitnessConfig) -> torch.optim.Optimizer:
    """The fine-tune optimiser; all are elementwise, so the batched (stacked) form is exact too.

    The fused kernels update every parameter in one call: 34 instead of 156 us per SGD step for the
    digits CNN on one CPU thread, a real share of a 4 ms step. Where this torch lacks them, the default.
    """
    params = list(params)
    if cfg.optimizer == "sgd":
        kind, kwargs = torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        kind, kwargs = torch.optim.Adam, dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        kind, kwargs = torch.optim.AdamW, dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.precision == "fp16":  # with a GradScaler, a skipped fused SGD step leaves momentum uninitialised
        return kind(params, **kwargs)
    try:
        return kind(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype here
        return kind(params, **kwargs)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, task: StagedTask, batches: int,
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
        x, _, _ = task.batch(k)
        (forward or model)(x)
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
    model.eval()


# task -> teacher -> (kd, layers) -> (layers, channels, targets); weak both ways, so a dropped task or
# parent takes its targets with it.
_TARGETS: "weakref.WeakKeyDictionary[StagedTask, weakref.WeakKeyDictionary]" = weakref.WeakKeyDictionary()
_TARGETS_LOCK = threading.Lock()


def feature_targets(task: StagedTask, teacher: nn.Module, cfg: FitnessConfig | None = None
                    ) -> tuple[list[str], list[int], list[torch.Tensor]]:
    """For `feature` / `attention`: the layers, the teacher's channels there, and the teacher's targets
    on the whole fine-tune subset (raw maps for `feature`, attention maps for `attention`).

    Computed once per (task, teacher) and kept for every individual: memory is finetune_samples x the
    feature maps' size (attention maps are C times smaller). Step k's targets are the rows
    `task.plan[k]`, exactly like the staged teacher logits.
    """
    cfg = task.cfg if cfg is None else cfg
    with _TARGETS_LOCK:  # threads of one population share the cache
        cache = _TARGETS.setdefault(task, weakref.WeakKeyDictionary()).setdefault(teacher, {})
        key = (cfg.kd, tuple(cfg.feature_layers))
        if key not in cache:
            layers = list(cfg.feature_layers) or default_feature_layers(teacher, task.example_input)
            targets = teacher_feature_targets(teacher, layers, cfg.kd, task.ft_x)
            channels = [int(t.shape[1]) for t in teacher_feature_targets(teacher, layers, "feature", task.ft_x[:1])]
            cache[key] = (layers, channels, targets)
        return cache[key]


def make_kd_loss(model: nn.Module, task: StagedTask, teacher: nn.Module, cfg: FitnessConfig | None = None
                 ) -> tuple[KDLoss, list[torch.Tensor] | None]:
    """The configured KD loss for `model` (adapters on its device) and the cached teacher targets."""
    cfg = task.cfg if cfg is None else cfg
    if cfg.kd not in FEATURE_KD_LOSSES:
        return KDLoss(cfg.kd, cfg.temperature, cfg.alpha, model), None
    layers, channels, targets = feature_targets(task, teacher, cfg)
    loss = KDLoss(cfg.kd, cfg.temperature, cfg.alpha, model, cfg.beta, layers, channels, task.example_input,
                  seed=task.seed)
    return loss, targets


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """torch on one thread while inside, on a CPU: how every CPU individual is fine-tuned and scored
    (the thread count changes float rounding, so this is what makes a fine-tune reproducible)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def finetune_and_recalibrate(model: nn.Module, task: StagedTask, teacher: nn.Module, steps: int | None = None,
                             cfg: FitnessConfig | None = None) -> tuple[float, bool]:
    """The sequential fitness recipe: KD fine-tune, then (when configured) adaptive BN. `teacher`: the
    parent (its feature maps, for feature KD); `cfg`: other settings than the task's (e.g. fp32)."""
    cfg = task.cfg if cfg is None else cfg
    with torch.enable_grad():  # callers may hold no_grad (e.g. `Run.subnet` inside an evaluation)
        kd_loss, finite = kd_finetune(model, task, teacher, steps, cfg)
    if finite:
        recalibrate_bn(model, task, cfg.adaptive_bn)
    return kd_loss, finite


def kd_finetune(model: nn.Module, task: StagedTask, teacher: nn.Module, steps: int | None = None,
                cfg: FitnessConfig | None = None) -> tuple[float, bool]:
    """Short KD fine-tune (`cfg.kd`) on the fixed batch plan; returns (mean loss of the last steps, finite).

    For `feature` the 1x1 adapters train with the student (same optimiser) and are dropped afterwards.
    """
    cfg = task.cfg if cfg is None else cfg
    device = task.device
    steps = cfg.steps if steps is None else steps
    if steps == 0:
        return float("nan"), True
    if channels_last_on(cfg, device):
        model.to(memory_format=torch.channels_last)
    kd, targets = make_kd_loss(model, task, teacher, cfg)
    params = list(model.parameters()) + list(kd.parameters())
    opt = make_optimizer(params, cfg)
    scaler = Scaler(cfg, device)
    model.train()
    # Dropout draws from torch's global generator, which parallel individuals share: it would make
    # fitness depend on scheduling. The short fitness fine-tune runs without it (the final one keeps it).
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    tail, losses = max(1, steps // 5), []
    finite = torch.ones((), dtype=torch.bool, device=device)
    try:
        for step in range(steps):
            x, y, t = task.batch(step)
            with autocast(cfg, device):
                out = model(x)
            rows = None if targets is None else [tgt[task.plan[step]] for tgt in targets]
            loss = kd(out.float(), t, y, rows)
            # A tensor flag, not an `if`: no host synchronisation inside the step loop. A diverged
            # individual is scored worst at the end rather than poisoning the run.
            finite &= torch.isfinite(loss)
            opt.zero_grad(set_to_none=True)
            scaler.backward(loss)
            if cfg.grad_clip:
                scaler.unscale(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            if step >= steps - tail:
                losses.append(loss.detach())
    finally:
        kd.close()
    model.eval()
    if not bool(finite):
        return float("nan"), False
    return float(torch.stack(losses).mean()), True
