"""Mixed precision and memory format for the fine-tune: autocast context and gradient scaler."""
from __future__ import annotations

import contextlib

import torch

from .config import FitnessConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(cfg: FitnessConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for the configured precision (a no-op for fp32)."""
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[cfg.precision])


class Scaler:
    """fp16 on CUDA needs loss scaling to keep small gradients; elsewhere this is a pass-through."""

    def __init__(self, cfg: FitnessConfig, device: torch.device):
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and device.type == "cuda" else None

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()


def channels_last_on(cfg: FitnessConfig, device: torch.device) -> bool:
    """`fitness.channels_last` resolved: `auto` is on for CPUs, where oneDNN's convolutions and BatchNorm
    run faster on channels_last (1.01-1.29x individuals/s for the digits CNN and ResNet-20,
    results/bench_cpu_options.md); off elsewhere, where it has not been measured here."""
    if cfg.channels_last == "auto":
        return device.type == "cpu"
    return bool(cfg.channels_last)


def memory_format(cfg: FitnessConfig, x: torch.Tensor) -> torch.Tensor:
    """Inputs in channels_last when it is on (4-D image batches only)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last_on(cfg, x.device) else x
