"""Specialists (Hinton, Vinyals & Dean 2015, section 5): small models for groups of classes the generalist
confuses, each trained by KD on its classes plus one dustbin class, combined with the generalist at inference.

- Groups: K-means on the columns of the covariance matrix of the generalist's predictions on the validation
  split (classes it tends to predict together fall in one cluster), as in the paper.
- A specialist starts from the generalist's weights (or a front member's, a smaller subnet) with a head of
  |group| + 1 outputs; it trains on every train example of its classes and as many others (the dustbin) by
  KD against the generalist's distribution collapsed to its classes + dustbin.
- Inference: specialists whose classes meet the generalist's top-n are active; the full distribution q
  minimises KL(p_generalist, q) + sum over active m of KL(p_m, q collapsed to m's classes + dustbin),
  solved by gradient descent on q's logits, as in the paper's section 5.3.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from evoprune.atomic import atomic_write, write_json
from evoprune.config import Config, DistillConfig
from evoprune.config.streams import stream_seed
from evoprune.data.taskdata import TaskData
from evoprune.deploy.distill import augment_kind, distill_model
from evoprune.deploy.metrics import latency_ms
from evoprune.fitness import resolve_device
from evoprune.metrics import count_params, is_multilabel, logits_of, top1
from evoprune.parent.models import classifier_of
from evoprune.run.files import DISTILL_METRICS, SPECIALISTS
from evoprune.run.reader import Run

COMBINE_STEPS = 100  # gradient steps of the combination (the objective is convex in q; this converges)


def confusable_groups(probs: torch.Tensor, k: int, seed: int) -> list[list[int]]:
    """K groups of classes from the covariance of predicted probabilities (N, C): K-means on its columns."""
    from sklearn.cluster import KMeans

    n_classes = probs.shape[1]
    if not 1 < k < n_classes:
        raise ValueError(f"--groups must be between 2 and {n_classes - 1} (the generalist has {n_classes} classes)")
    cov = np.cov(probs.double().numpy(), rowvar=False)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(cov)
    groups = [sorted(int(c) for c in np.flatnonzero(labels == g)) for g in range(k)]
    return sorted((g for g in groups if g), key=lambda g: g[0])


def collapse(probs: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(N, C) probabilities -> (N, |classes| + 1): the group's classes, then the rest summed (the dustbin)."""
    inside = probs[:, classes]
    return torch.cat([inside, (1.0 - inside.sum(1, keepdim=True)).clamp_min(0.0)], dim=1)


class CollapsedTeacher(nn.Module):
    """The generalist seen by a specialist: log of its distribution collapsed to the group + dustbin (as
    logits: softmax gives back the collapsed distribution, and KD's temperature applies to it)."""

    def __init__(self, generalist: nn.Module, classes: list[int]):
        super().__init__()
        self.generalist, self.classes = generalist, list(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return collapse(F.softmax(self.generalist(x).float(), dim=1), self.classes).clamp_min(1e-12).log()


def specialist_model(start: nn.Module, classes: list[int]) -> nn.Module:
    """A copy of `start` whose output layer gives the group's classes and a dustbin: their rows of the old
    head, and the mean of the other rows for the dustbin."""
    model = copy.deepcopy(start)
    head = classifier_of(model)
    others = [c for c in range(head.weight.shape[0]) if c not in set(classes)]
    with torch.no_grad():
        weight = torch.cat([head.weight[classes], head.weight[others].mean(0, keepdim=True)])
        bias = None if head.bias is None else torch.cat([head.bias[classes], head.bias[others].mean(0, keepdim=True)])
    head.weight = nn.Parameter(weight)
    if bias is not None:
        head.bias = nn.Parameter(bias)
    if isinstance(head, nn.Linear):
        head.out_features = len(classes) + 1
    else:
        head.out_channels = len(classes) + 1
    return model


def specialist_task(data: TaskData, classes: list[int], seed: int) -> TaskData:
    """Train on every example of the group and as many others (seeded), labels mapped to the group's
    positions with the others as the dustbin; val mapped likewise (all of it)."""
    inside = torch.isin(data.train_y, torch.tensor(classes))
    gen = torch.Generator().manual_seed(seed)
    others = torch.nonzero(~inside).flatten()
    others = others[torch.randperm(len(others), generator=gen)[: int(inside.sum())]]
    rows = torch.cat([torch.nonzero(inside).flatten(), others]).sort().values
    mapping = torch.full((data.n_classes,), len(classes), dtype=torch.long)
    mapping[torch.tensor(classes)] = torch.arange(len(classes))
    train_x = data.train_x[rows] if isinstance(data.train_x, torch.Tensor) else data.train_x.subset(rows)
    return dataclasses.replace(data, train_x=train_x, train_y=mapping[data.train_y[rows]], val_y=mapping[data.val_y],
                               n_classes=len(classes) + 1, class_names=None)


def train_specialist(generalist: nn.Module, start: nn.Module, classes: list[int], data: TaskData, cfg: DistillConfig,
                     seed: int, device: torch.device, aug: str, progress: bool = False) -> nn.Module:
    """One specialist, distilled from the generalist's collapsed distribution on its classes and dustbin."""
    task = specialist_task(data, classes, seed)
    student = specialist_model(start, classes)
    teacher = CollapsedTeacher(copy.deepcopy(generalist), classes)
    logit_cfg = dataclasses.replace(cfg, kd=cfg.kd if cfg.kd in ("hinton", "mse", "smooth_l1") else "hinton")
    model, _, _ = distill_model(student, teacher, task, logit_cfg, seed, device, None, None, progress, aug)
    return model


def combine(general: torch.Tensor, specialists: list[tuple[list[int], torch.Tensor]], top_n: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, how many specialists were active per example): the paper's combination of the generalist's
    logits (N, C) with each specialist's logits (N, |group| + 1), for the specialists whose classes meet
    the generalist's top-n classes of an example; an example with none keeps the generalist's q."""
    p_general = F.softmax(general.double(), dim=1)
    top = general.topk(min(top_n, general.shape[1]), dim=1).indices
    terms = []
    active_count = torch.zeros(len(general), dtype=torch.long)
    for classes, logits in specialists:
        active = torch.isin(top, torch.tensor(classes)).any(1)
        active_count += active.long()
        terms.append((classes, F.softmax(logits.double(), dim=1), active.double()))
    q_all = p_general.clone()
    rows = active_count > 0  # the others keep the generalist's distribution exactly
    if rows.any():
        p_rows = p_general[rows]
        z = p_rows.clamp_min(1e-12).log().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(COMBINE_STEPS):
            q = F.softmax(z, dim=1)
            loss = (p_rows * (p_rows.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(1)
            for classes, p_m, active in terms:
                q_m = collapse(q, classes).clamp_min(1e-12)
                p_m = p_m[rows]
                loss = loss + active[rows] * (p_m * (p_m.clamp_min(1e-12).log() - q_m.log())).sum(1)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        q_all[rows] = F.softmax(z.detach(), dim=1)
    return q_all.float(), active_count


def run_specialists(run: Run, cfg: Config, groups: int | list[list[int]], top_n: int = 2, pick: int | None = None,
                    progress: bool = False, metric_runs: int = 20, out_name: str = SPECIALISTS) -> dict[str, Any]:
    """`evoprune specialists`: group the classes the run's parent confuses (`groups` of them by K-means, or
    the given lists of class indices), train one specialist per group (from the parent, or from front member
    `pick`), and report on test the parent alone against the combination, per group, with the cost; writes
    RUN_DIR/`out_name`/{metrics.json, specialist-i.pt}."""
    data = run.task_data()
    if is_multilabel(data.val_y):
        raise ValueError("specialists group classes the parent confuses; multi-label data have attributes instead")
    device = resolve_device(cfg.fitness.device)
    generalist = run.parent()
    if isinstance(groups, int):
        classes_of = confusable_groups(F.softmax(logits_of(generalist, data.val_x), dim=1), groups, cfg.seed)
    else:  # the user's own groups: the classes in none are left to the parent
        classes_of = [sorted(set(g)) for g in groups]
        bad = [c for g in classes_of for c in g if not 0 <= c < data.n_classes]
        if bad or any(not g for g in classes_of) or len({c for g in classes_of for c in g}) < sum(map(len, classes_of)):
            raise ValueError(f"groups must be disjoint, non-empty lists of class indices 0..{data.n_classes - 1}")
    start = run.subnet(pick) if pick is not None else generalist
    aug = augment_kind(cfg, data.input_shape)
    models = []
    bar = tqdm(classes_of, desc="specialists", disable=not progress, leave=False)
    for i, classes in enumerate(bar):
        models.append(train_specialist(generalist, start, classes, data, cfg.distill,
                                       stream_seed(cfg.seed, "distill.specialist", i), device, aug))
    y = data.test_y
    general = logits_of(generalist, data.test_x)
    spec = [logits_of(m.eval(), data.test_x) for m in models]
    began = time.perf_counter()
    q, active = combine(general, list(zip(classes_of, spec)), top_n)
    combine_ms = (time.perf_counter() - began) * 1000 / max(1, len(y))
    one = data.test_x[:1]
    result: dict[str, Any] = {
        "groups": classes_of, "top_n": top_n, "start": "parent" if pick is None else f"front member {pick}",
        "generalist_test_accuracy": top1(general, y), "combined_test_accuracy": top1(q, y),
        "active_specialists_mean": float(active.float().mean()), "n_test": len(y),
        "distill": dataclasses.asdict(cfg.distill), "per_group": [],
        "cost": {"generalist_params": count_params(generalist),
                 "generalist_latency_ms": latency_ms(generalist, one, runs=metric_runs),
                 "combine_ms_per_example": combine_ms}}
    for classes, model, logits in zip(classes_of, models, spec):
        inside = torch.isin(y, torch.tensor(classes))
        mapped = torch.full((data.n_classes,), len(classes), dtype=torch.long)
        mapped[torch.tensor(classes)] = torch.arange(len(classes))
        result["per_group"].append({
            "classes": classes, "names": [data.class_names[c] for c in classes] if data.class_names else None,
            "n_test": int(inside.sum()), "generalist_accuracy": top1(general[inside], y[inside]),
            "combined_accuracy": top1(q[inside], y[inside]),
            "specialist_accuracy_own_task": top1(logits, mapped[y]), "params": count_params(model),
            "latency_ms": latency_ms(model, one, runs=metric_runs)})
    out = Path(run.dir) / out_name
    out.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(models):
        atomic_write(out / f"specialist-{i}.pt", lambda fh, m=model: torch.save(m.state_dict(), fh), binary=True)
    write_json(out / DISTILL_METRICS, result)
    return result


def specialists_table(result: dict[str, Any]) -> str:
    """Per group, the parent alone against parent + specialists on test, and the cost."""
    lines = [f"{'group':<28} {'n test':>6} {'alone':>7} {'with':>7} {'own task':>8} {'params':>10} {'ms@1':>7}"]
    lines.append("-" * len(lines[0]))
    for g in result["per_group"]:
        name = ",".join(g["names"] or map(str, g["classes"]))[:28]
        lines.append(f"{name:<28} {g['n_test']:6d} {g['generalist_accuracy']:7.4f} {g['combined_accuracy']:7.4f} "
                     f"{g['specialist_accuracy_own_task']:8.4f} {g['params']:10,d} {g['latency_ms']:7.3f}")
    c = result["cost"]
    lines.append(f"{'all':<28} {result['n_test']:6d} {result['generalist_test_accuracy']:7.4f} "
                 f"{result['combined_test_accuracy']:7.4f} {'':8} {c['generalist_params']:10,d} "
                 f"{c['generalist_latency_ms']:7.3f}  (the generalist)")
    lines.append(f"test split; specialists active per example: {result['active_specialists_mean']:.2f} (top-"
                 f"{result['top_n']} of the generalist); combining: {c['combine_ms_per_example']:.3f} ms per example")
    return "\n".join(lines)
