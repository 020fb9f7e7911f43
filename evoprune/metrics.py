"""Batched inference helpers: logits over a tensor dataset, top-1 (or mean attribute) accuracy, label losses, counts."""
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


def is_multilabel(y: torch.Tensor) -> bool:
    """Multi-label targets are (N, attributes) of 0/1, one binary attribute per output; classes are (N,)."""
    return y.dim() == 2


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy; for multi-label targets the mean attribute accuracy (an attribute is predicted
    present where its logit is above 0)."""
    if is_multilabel(y):
        return float(((logits > 0) == (y > 0.5)).float().mean())
    return float((logits.argmax(1) == y).float().mean())


def mean_average_precision(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Multi-label: the mean over attributes (those with both values present) of their average precision."""
    from sklearn.metrics import average_precision_score

    keep = [(y[:, a] > 0.5).any() and (y[:, a] < 0.5).any() for a in range(y.shape[1])]
    if not any(keep):
        return float("nan")
    cols = torch.tensor(keep)
    return float(average_precision_score((y[:, cols] > 0.5).numpy(), logits[:, cols].float().numpy(),
                                         average="macro"))


def label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class labels; binary cross-entropy per attribute on multi-label targets."""
    if is_multilabel(y):
        return nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    return nn.functional.cross_entropy(logits, y)


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
