"""Scoring: a model's objectives (validation accuracy, size against the parent) on a StagedTask."""
from __future__ import annotations

import math

from torch import nn

from evoprune.fitness.recipe import recalibrate_bn
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.metrics import count_macs, count_params, is_multilabel, logits_of, mean_average_precision, top1
from evoprune.objectives import Objectives
from evoprune.pruning.materialise import materialise


def objectives(task: StagedTask, n_params: int, macs: int, accuracy: float, kd_loss: float, finite: bool,
               seconds: float, accuracy_before: float | None = None) -> Objectives:
    """Objectives from measured numbers: sizes as ratios of the parent's; a diverged fine-tune scores worst.

    A fine-tune that ended below the subnet's own score before it (`accuracy_before`, after adaptive BN)
    is marked `regressed`, and keeps its score after the fine-tune: scoring such subnets by the better
    of the two ranked 40 Fashion-MNIST subnets worse against their final accuracy (partial Spearman
    0.59 against 0.66, results/fidelity-fmnist), so the fall is reported, not acted on."""
    params_ratio, macs_ratio = n_params / task.parent_n_params, macs / task.parent_macs
    size_ratio = params_ratio if task.size_metric == "params" else macs_ratio
    status, after = "ok", (accuracy if math.isfinite(kd_loss) else None)
    if not finite:
        status, accuracy = "nonfinite", 0.0
    elif accuracy_before is not None and accuracy_before > accuracy:
        status = "regressed"
    return Objectives(accuracy, n_params, macs, size_ratio, params_ratio, macs_ratio, kd_loss, seconds, status,
                      accuracy_before, after)


def val_accuracy(task: StagedTask, model: nn.Module) -> float:
    """Top-1 of `model` on the fixed validation subset the search scores on; for multi-label data the mean
    attribute accuracy, or the mean average precision (`fitness.multilabel_score: map`)."""
    logits, y = logits_of(model, task.val_x), task.val_y.cpu()
    if is_multilabel(y) and task.cfg.multilabel_score == "map":
        return mean_average_precision(logits, y)
    return top1(logits, y)


def checks_regression(task: StagedTask) -> bool:
    """Whether a fine-tune is checked against the score before it: asked for, a fine-tune runs, and BN is
    recalibrated (the score before it is of the recalibrated subnet)."""
    return bool(task.cfg.regression_check and task.cfg.steps and task.cfg.adaptive_bn)


def score_before(task: StagedTask, model: nn.Module) -> float | None:
    """The subnet's score before its fine-tune, after adaptive BN (None where `checks_regression` is
    false). Harmless to the fine-tune: training mode normalises with batch statistics, and the
    recalibration after the fine-tune starts afresh."""
    if not checks_regression(task):
        return None
    recalibrate_bn(model, task, task.cfg.adaptive_bn)
    return val_accuracy(task, model)


def score(task: StagedTask, model: nn.Module, kd_loss: float, finite: bool, seconds: float,
          scratch: bool = False, accuracy_before: float | None = None) -> Objectives:
    """Objectives of a (fine-tuned) model: validation accuracy and size against the parent.
    `scratch`: the model is discarded afterwards (counting may then mark it)."""
    acc = val_accuracy(task, model) if finite else 0.0
    return objectives(task, count_params(model), count_macs(model, task.example_input, scratch), acc, kd_loss,
                      finite, seconds, accuracy_before)


def genome_objectives(task: StagedTask, parent: nn.Module, genome: Genome, accuracy: float, kd_loss: float,
                      finite: bool, seconds: float, accuracy_before: float | None = None) -> Objectives:
    """Objectives of a genome whose accuracy was measured elsewhere (e.g. masked, batched): its sizes
    counted on the pruned network."""
    model = materialise(parent, genome, task.example_input)
    return objectives(task, count_params(model), count_macs(model, task.example_input, True), accuracy, kd_loss,
                      finite, seconds, accuracy_before)
