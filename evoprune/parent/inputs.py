"""Whether the parent architecture takes the task's inputs: one clear error before training, with the
smallest input size it does take."""
from __future__ import annotations

import torch
from torch import nn

from evoprune.config import ConfigError
from evoprune.data.taskdata import TaskData

TRIED_SIZES = (32, 64, 96, 128, 160, 224, 299)  # square sizes suggested for a model that needs larger inputs


def smallest_input_size(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """The smallest of TRIED_SIZES above the input's that the model takes (one forward of 1 input each)."""
    for size in TRIED_SIZES:
        if len(input_shape) != 3 or size <= min(input_shape[1:]):
            continue
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, input_shape[0], size, size))
            return size
        except (RuntimeError, AssertionError, ValueError):
            continue
    return None


def check_input_size(model: nn.Module, data: TaskData, arch: str) -> None:
    """One forward of the task's input shape, so that too small images fail here, clearly, not mid-training."""
    try:
        with torch.no_grad():
            out = model.eval()(data.example_input(2))
    except (RuntimeError, AssertionError, ValueError) as exc:  # torchvision's ViTs assert their image size
        shape = "x".join(map(str, data.input_shape))
        size = smallest_input_size(model, data.input_shape)
        hint = (f"set data.image_size to {size} (the smallest of {', '.join(map(str, TRIED_SIZES))} it takes)"
                if size else f"it takes none of {', '.join(map(str, TRIED_SIZES))} px")
        raise ConfigError("data.image_size", f"parent.arch={arch} cannot take {shape} inputs "
                                             f"({' '.join(str(exc).split())[:120]}); {hint}") from None
    # the built-in heads are made for the task; a user's own model (an import path) brings its own
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < data.n_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError("parent.arch", f"{arch} must return class logits of shape (batch, {data.n_classes}) for "
                                         f"this data; on a batch of 2 it returned {got}")
