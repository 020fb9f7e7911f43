"""Final distillation: a long KD fine-tune of a chosen front member on the train split, reported on test.

The test split is read only here (and by export / report metrics), never by the search.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from evoprune.atomic import atomic_write, write_json
from evoprune.config import Config, DistillConfig
from evoprune.config.streams import stream_seed
from evoprune.data.rows import batches
from evoprune.data.task import TaskData, augment_batch, augment_policy
from evoprune.deploy.metrics import deployment_metrics
from evoprune.fitness import resolve_device
from evoprune.config.vocab import FEATURE_KD_LOSSES
from evoprune.fitness.losses import FeatureTap, KDLoss, default_feature_layers, mutual_kl
from evoprune.metrics import accuracy, is_multilabel
from evoprune.run.files import (DEFAULT_WEIGHTS, DISTILL_CURVE, DISTILL_METRICS, DISTILLED_MODEL, DISTILLED_SECOND_MODEL,
                                distill_dir)
from evoprune.run.reader import Run


def augment_kind(cfg: Config, input_shape: tuple[int, ...]) -> str:
    """`distill.augment`; `auto`: none below 16 px, else the data's own policy (`data.augment`: crop for
    MNIST-like digits, crop_flip for natural images)."""
    if cfg.distill.augment != "auto":
        return cfg.distill.augment
    if len(input_shape) != 3 or min(input_shape[-2:]) < 16:  # not images (a user's own data), or tiny ones
        return "none"
    return augment_policy(cfg.data)


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """The data's own augmentation (crop after zero padding, flip), on the inputs' device."""
    return augment_batch(x, kind, gen)


class _Student:
    """One student with its loss, optimiser and schedule."""

    def __init__(self, model: nn.Module, cfg: DistillConfig, layers: list[str], teacher_channels: list[int],
                 example: torch.Tensor, steps: int, seed: int):
        self.model = model
        self.kd = KDLoss(cfg.kd, cfg.temperature, cfg.alpha, model, cfg.beta, layers, teacher_channels, example,
                         seed=seed)
        params = list(model.parameters()) + list(self.kd.parameters())
        self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(1, steps))


def _teacher_step(teacher: nn.Module, tap: Any, kd: KDLoss, x: torch.Tensor):
    with torch.no_grad():
        t = teacher(x).float()
        targets = kd.teacher_targets(tap.features()) if tap is not None else None
    return t, targets


CACHE_BYTES = 512 * 2**20


@torch.no_grad()
def _teacher_cache(teacher: nn.Module, tap: Any, kd: KDLoss, x: torch.Tensor, batch: int = 256):
    """(teacher logits, feature targets) on all of `x`, or None when the targets would exceed CACHE_BYTES."""
    logits, feats = [], []
    for i in range(0, len(x), batch):
        logits.append(teacher(x[i:i + batch]).float())
        if tap is not None:
            feats.append(kd.teacher_targets(tap.features()))
            if i == 0 and sum(f[0].numel() * 4 for f in feats[0]) * len(x) > CACHE_BYTES:
                return None
    targets = [torch.cat(parts) for parts in zip(*feats)] if feats else []
    return torch.cat(logits), targets


def distill_model(student: nn.Module, teacher: nn.Module, data: TaskData, cfg: DistillConfig, seed: int,
                  device: torch.device, fitness_kd: Any = None, second: nn.Module | None = None,
                  progress: bool = False, aug: str = "none", layer_map: dict[str, str] | None = None
                  ) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """Train `student` (and, for deep mutual learning, `second`) by KD from `teacher` on data's train split.

    DML (Zhang et al. 2018): each step draws one batch per student from its own shuffled order; both
    students see the union of the two batches, each takes the KD loss on its own batch and KL towards
    the other's predictions on the union. Different data orders keep two copies of one subnet apart.
    `seed`: the run's seed; each student's initialisation of KD adapters and its augmentation draws are
    its named streams (config.streams: distill.student, distill.augment). `layer_map`: {student layer:
    teacher layer} for feature / attention KD where the student's layers are named otherwise (another
    architecture); without it both use the same names (a subnet keeps its parent's).
    Returns the trained student(s) on the CPU in eval mode and a summary.
    """
    if second is not None and is_multilabel(data.train_y):
        raise ValueError("deep mutual learning matches two students' class distributions; multi-label data have "
                         "independent attributes: drop distill.dml")
    beta = cfg.beta if cfg.beta is not None else getattr(fitness_kd, "beta", None)
    layers: list[str] = []
    teacher_layers: list[str] = []
    if cfg.kd in FEATURE_KD_LOSSES:
        if layer_map:
            layers, teacher_layers = list(layer_map), list(layer_map.values())
        else:
            layers = list(cfg.feature_layers) or list(getattr(fitness_kd, "feature_layers", []) or []) or \
                default_feature_layers(teacher, data.example_input())
            teacher_layers = layers
    cfg = dataclasses.replace(cfg, beta=beta)
    teacher = copy.deepcopy(teacher).to(device).eval()  # a private copy: hooks go on it
    for p in teacher.parameters():
        p.requires_grad_(False)
    tap = FeatureTap(teacher, teacher_layers) if teacher_layers else None
    example = data.example_input().to(device)
    channels: list[int] = []
    if tap is not None:
        with torch.no_grad():
            teacher(example)
        channels = [f.shape[1] for f in tap.features()]
    n = len(data.train_y)
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch  # drop the last partial batch (BN on a tiny batch is noisy)
    steps = cfg.epochs * per_epoch
    models = [student.to(device)] + ([second.to(device)] if second is not None else [])
    students = [_Student(m, cfg, layers, channels, example, steps, stream_seed(seed, "distill.student", i)) for i, m in enumerate(models)]
    gens = [torch.Generator().manual_seed(stream_seed(seed, "distill.augment", i)) for i in range(len(students))]
    # A Dataset's items (DatasetRows) are read per batch by DataLoader workers, never held whole.
    lazy = not isinstance(data.train_x, torch.Tensor)
    train_x, train_y = (data.train_x if lazy else data.train_x.to(device)), data.train_y.to(device)
    # Without augmentation every epoch shows the teacher the same inputs: its outputs (and feature
    # targets, up to CACHE_BYTES) are computed once, which removes the teacher's forward from each step.
    cached = _teacher_cache(teacher, tap, students[0].kd, train_x) if aug == "none" and not lazy else None
    start = time.perf_counter()
    last: list[Any] = [torch.tensor(float("nan"))] * len(students)
    history: list[dict[str, float]] = []  # per epoch: mean train loss, validation accuracy (first student)
    for s in students:
        s.model.train()
    bar = tqdm(range(cfg.epochs), desc="distilling", disable=not progress, leave=False)
    try:
        for epoch in bar:
            epoch_loss = torch.zeros((), device=device)
            orders = [torch.randperm(n, generator=g)[: per_epoch * batch].view(per_epoch, batch) for g in gens]
            streams = [iter(batches(train_x, o.unbind(0), pin=device.type == "cuda")) for o in orders] if lazy else []
            for k in range(per_epoch):
                idx = [o[k].to(device) for o in orders]
                parts = [next(s).to(device) for s in streams] if lazy else [train_x[i] for i in idx]
                x = torch.cat([augment(p, aug, g) for p, g in zip(parts, gens)])
                y = torch.cat([train_y[i] for i in idx])
                if cached is not None:
                    rows = torch.cat(idx)
                    t, targets = cached[0][rows], [c[rows] for c in cached[1]] if tap is not None else None
                else:
                    t, targets = _teacher_step(teacher, tap, students[0].kd, x)
                outs = [s.model(x) for s in students]  # every student on the union of the batches
                for j, s in enumerate(students):
                    part = slice(j * batch, (j + 1) * batch)
                    if s.kd.tap is not None:
                        loss = s.kd(outs[j][part].float(), t[part], y[part], [f[part] for f in targets], part)
                    else:
                        loss = s.kd(outs[j][part].float(), t[part], y[part])
                    if len(students) == 2:
                        loss = loss + mutual_kl(outs[j].float(), outs[1 - j].float())
                    s.opt.zero_grad(set_to_none=True)
                    loss.backward()  # the peer enters detached: the graphs are separate
                    last[j] = loss.detach()  # a tensor: no host synchronisation per step
                epoch_loss += last[0]
                for s in students:
                    s.opt.step()
                    s.sched.step()
            val_acc = accuracy(students[0].model, data.val_x, data.val_y)  # eval mode; the next epoch resets it
            students[0].model.train()
            history.append({"epoch": epoch + 1, "train_loss": float(epoch_loss) / max(1, per_epoch),
                            "val_accuracy": val_acc})
            if progress:
                bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_acc=f"{val_acc:.4f}")
    finally:
        if tap is not None:
            tap.remove()
        for s in students:
            s.kd.close()
    out = [s.model.cpu().eval() for s in students]
    last = [float(v) for v in last]
    summary = {"steps": steps, "epochs": cfg.epochs, "batch_size": batch, "augment": aug, "kd": cfg.kd,
               "beta": students[0].kd.beta if cfg.kd in FEATURE_KD_LOSSES else None, "feature_layers": layers, "teacher_layers": teacher_layers,
               "dml": len(students) == 2, "final_loss": last, "teacher_cached": cached is not None,
               "seconds": time.perf_counter() - start, "device": device.type, "history": history}
    return out[0], (out[1] if len(out) == 2 else None), summary


def check_second_student(cfg: DistillConfig, pick2: int | None) -> None:
    """ValueError when a second student is named without deep mutual learning."""
    if pick2 is not None and not cfg.dml:
        raise ValueError("--pick2 names the second student of deep mutual learning: add --set distill.dml=true")


def run_distill(run: Run, cfg: Config, pick: int, pick2: int | None = None, progress: bool = False,
                metric_runs: int = 20) -> dict[str, Any]:
    """`evoprune distill`: train front member `pick` (DML: with `pick2` or a second copy), write
    RUN_DIR/distill-K/{model.pt, metrics.json} and return the metrics."""
    d = cfg.distill
    check_second_student(d, pick2)
    torch.manual_seed(stream_seed(cfg.seed, "torch.global"))
    data = run.task_data()  # the configured data, or a search from Python's given data
    device = resolve_device(cfg.fitness.device)
    teacher = run.parent()
    student = run.subnet(pick, "finetuned")  # where the front's figure came from
    second = None
    if d.dml:
        second = run.subnet(pick2, "finetuned") if pick2 is not None else copy.deepcopy(student)
    before = accuracy(student, data.val_x, data.val_y)
    student, second, summary = distill_model(student, teacher, data, d, cfg.seed, device, cfg.fitness, second,
                                             progress, augment_kind(cfg, data.input_shape))
    n_classes = data.n_classes
    result: dict[str, Any] = {
        "pick": pick, "initial_weights": DEFAULT_WEIGHTS, "genome_key": run.front[pick].get("key"), "search_val_accuracy": run.front[pick].get("accuracy"),
        "val_accuracy_before": before, "val_accuracy": accuracy(student, data.val_x, data.val_y),
        "parent_val_accuracy": accuracy(teacher, data.val_x, data.val_y),
        "distill": {**dataclasses.asdict(d), **summary},
        "test": deployment_metrics(student, data.test_x, data.test_y, n_classes, runs=metric_runs),
        "parent_test": deployment_metrics(teacher, data.test_x, data.test_y, n_classes, runs=metric_runs),
    }
    result["test_accuracy"] = result["test"]["top1"]
    result["parent_test_accuracy"] = result["parent_test"]["top1"]
    out = distill_dir(run.dir, pick)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / DISTILLED_MODEL, lambda fh: torch.save(student.state_dict(), fh), binary=True)
    if second is not None:
        result["second"] = {"pick": pick2 if pick2 is not None else pick, "copy": pick2 is None,
                            "val_accuracy": accuracy(second, data.val_x, data.val_y),
                            "test": deployment_metrics(second, data.test_x, data.test_y, n_classes, runs=metric_runs)}
        result["second"]["test_accuracy"] = result["second"]["test"]["top1"]
        atomic_write(out / DISTILLED_SECOND_MODEL, lambda fh: torch.save(second.state_dict(), fh), binary=True)
    write_json(out / DISTILL_METRICS, result)
    from evoprune.run.report import plot_distill_curve

    plot_distill_curve(summary["history"], out / DISTILL_CURVE, f"distill front member {pick} of {run.dir.name}: "
                       f"{run.config.parent.arch} on {run.config.data.name}, kd={d.kd}",
                       start_accuracy=result["val_accuracy_before"])
    return result
