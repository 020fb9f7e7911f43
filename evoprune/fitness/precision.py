"""Where and how the fine-tune computes: the device, autocast precision and gradient scaler, memory format."""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys

import torch

from evoprune.config import ConfigError, FitnessConfig
from evoprune.errors import signal_name

def resolve_device(name: str) -> torch.device:
    """`fitness.device` as a torch device (`auto`: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("fitness.device", "'cuda' but no CUDA device is available (use cpu or auto)")
    return torch.device(name)


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


# The known crash: on torch 2.14.1's CPU build, the input gradient of a strided 1x1 convolution with
# fewer than 8 input channels, in channels_last on one thread, corrupts the heap (glibc aborts the
# process, or it segfaults, or it goes on with damaged memory). Pruned subnets make such shapes all
# the time, and the forked workers run one thread each. A heap corruption cannot be caught in the
# process that suffers it, so the pattern runs in a throwaway child.
_PROBE = """
import torch
torch.set_num_threads(1)
for c_in in (1, 2, 3, 4, 6):
    for k, stride in ((1, 2), (3, 2), (1, 1)):
        conv = torch.nn.Conv2d(c_in, 2 * c_in, k, stride, k // 2).to(memory_format=torch.channels_last)
        x = torch.randn(32, c_in, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
        for _ in range(5):
            conv(x).sum().backward()
print("ok")
"""


@functools.cache
def channels_last_cpu_problem() -> str | None:
    """Why channels_last is unsafe for the CPU fine-tune with this torch (the known crash pattern, run
    in a child process: about 2 s, once per process), or None when the child survived it.

    Surviving the probe does not prove every shape safe, which is why channels_last stays opt-in on CPUs.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return "a channels_last convolution probe did not finish within 300 s"
    if done.returncode == 0 and done.stdout.strip() == "ok":
        return None
    how = (f"was killed by {signal_name(-done.returncode)}" if done.returncode < 0
           else f"exited with code {done.returncode}")
    said = " ".join(done.stderr.split())[-160:]
    return (f"with torch {torch.__version__}, a child process running channels_last convolution backward passes on "
            f"one CPU thread {how}{f' ({said})' if said else ''}: this torch corrupts memory there")


def channels_last_on(cfg: FitnessConfig, device: torch.device) -> bool:
    """`fitness.channels_last` resolved: `auto` is off everywhere. On CPUs channels_last was faster
    (results/bench_cpu_options.md) but crashes torch 2.14.1 (see _PROBE); on GPUs it is unmeasured."""
    return cfg.channels_last is True


def check_channels_last(cfg: FitnessConfig, device: torch.device) -> None:
    """Refuse `fitness.channels_last: true` on a CPU whose torch fails the crash probe (ConfigError)."""
    if channels_last_on(cfg, device) and device.type == "cpu":
        problem = channels_last_cpu_problem()
        if problem:
            raise ConfigError("fitness.channels_last", f"true, but {problem}; set it to false (the default) "
                                                       f"or use another torch version")


def memory_format(cfg: FitnessConfig, x: torch.Tensor) -> torch.Tensor:
    """Inputs in channels_last when it is on (4-D image batches only)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last_on(cfg, x.device) else x
