"""Scoring: a model's objectives (validation accuracy, size against the parent) on a StagedTask."""
from __future__ import annotations

from torch import nn

from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.metrics import count_macs, count_params, logits_of, top1
from evoprune.objectives import Objectives
from evoprune.pruning.materialise import materialise


def objectives(task: StagedTask, n_params: int, macs: int, accuracy: float, kd_loss: float, finite: bool,
               seconds: float) -> Objectives:
    """Objectives from measured numbers: sizes as ratios of the parent's; a diverged fine-tune scores worst."""
    params_ratio, macs_ratio = n_params / task.parent_n_params, macs / task.parent_macs
    size_ratio = params_ratio if task.size_metric == "params" else macs_ratio
    return Objectives(accuracy if finite else 0.0, n_params, macs, size_ratio, params_ratio, macs_ratio,
                      kd_loss, seconds, "ok" if finite else "nonfinite")


def val_accuracy(task: StagedTask, model: nn.Module) -> float:
    """Top-1 of `model` on the fixed validation subset the search scores on."""
    return top1(logits_of(model, task.val_x), task.val_y.cpu())


def score(task: StagedTask, model: nn.Module, kd_loss: float, finite: bool, seconds: float,
          scratch: bool = False) -> Objectives:
    """Objectives of a (fine-tuned) model: validation accuracy and size against the parent.
    `scratch`: the model is discarded afterwards (counting may then mark it)."""
    acc = val_accuracy(task, model) if finite else 0.0
    return objectives(task, count_params(model), count_macs(model, task.example_input, scratch), acc, kd_loss,
                      finite, seconds)


def genome_objectives(task: StagedTask, parent: nn.Module, genome: Genome, accuracy: float, kd_loss: float,
                      finite: bool, seconds: float) -> Objectives:
    """Objectives of a genome whose accuracy was measured elsewhere (e.g. masked, batched): its sizes
    counted on the pruned network."""
    model = materialise(parent, genome, task.example_input)
    return objectives(task, count_params(model), count_macs(model, task.example_input, True), accuracy, kd_loss,
                      finite, seconds)
