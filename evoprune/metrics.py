"""Batched inference helpers: logits over a tensor dataset, top-1 accuracy, parameter counts."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs on `x` in eval mode, batch by batch, on the model's device; returned on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    return top1(logits_of(model, x, batch_size), y)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward at `example_input`'s shape (torch-pruning's counter)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model, example_input)
    return int(macs)
