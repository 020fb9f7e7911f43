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


def count_macs(model: nn.Module, example_input: torch.Tensor, scratch: bool = False) -> int:
    """Multiply-accumulates of one forward at `example_input`'s shape (torch-pruning's counter).

    `scratch`: the caller discards `model` afterwards, so count on it directly instead of on the deep
    copy torch-pruning makes to leave a model untouched (that copy is half the cost for a small net).
    """
    import torch_pruning as tp

    counter = getattr(tp.utils, "op_counter", None)
    if scratch and hasattr(counter, "add_flops_counting_methods"):
        flops_model = counter.add_flops_counting_methods(model)
        flops_model.eval()
        flops_model.start_flops_count(ost=None, verbose=False, ignore_list=[])
        with torch.no_grad():
            flops_model(example_input)
        macs = flops_model.compute_average_flops_cost()[0]
        flops_model.stop_flops_count()
        return int(macs)
    macs, _ = tp.utils.count_ops_and_params(model, example_input)
    return int(macs)
