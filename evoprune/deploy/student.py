"""`evoprune distill --student ARCH`: any student architecture distilled from the run's parent, reported next to
the teacher and to the same student trained on the labels alone (same recipe, epochs and seed)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from evoprune.atomic import atomic_write, write_json
from evoprune.config import Config, DistillConfig
from evoprune.config.streams import stream_seed
from evoprune.config.vocab import FEATURE_KD_LOSSES
from evoprune.deploy.distill import augment_kind, distill_model
from evoprune.deploy.metrics import deployment_metrics
from evoprune.fitness import resolve_device
from evoprune.fitness.losses import FeatureTap, default_feature_layers
from evoprune.metrics import accuracy
from evoprune.parent.models import build_model
from evoprune.run.files import DISTILL_METRICS, DISTILLED_MODEL, STUDENT_LABELS_MODEL, student_dir
from evoprune.run.reader import Run

ROWS = (("teacher", "the run's parent"), ("distilled", "the student, KD from the teacher"),
        ("distilled_peer", "its deep-mutual-learning peer"), ("labels_only", "the student, labels alone"))


def build_student(d: DistillConfig, n_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The configured student for this task, its logits checked on one batch; ValueError in one line."""
    try:
        model = build_model(d.student, n_classes, input_shape[0], d.student_width,
                            pretrained=d.student_pretrained == "imagenet", kwargs=d.student_kwargs)
        with torch.no_grad():
            out = model.eval()(torch.zeros((2, *input_shape)))
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"distill.student={d.student} cannot take {'x'.join(map(str, input_shape))} inputs "
                         f"({' '.join(str(err).split())[:120]})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != n_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"distill.student={d.student} must return ({2}, {n_classes}) logits; it returned {got}")
    return model.train()


def student_layer_map(student: nn.Module, teacher: nn.Module, example: torch.Tensor,
                      d: DistillConfig) -> dict[str, str] | None:
    """{student layer: teacher layer} for feature / attention KD: `distill.layer_map`, else each network's
    last three stages paired in order; ValueError naming a pair whose maps differ in resolution."""
    if d.kd not in FEATURE_KD_LOSSES:
        return None
    if d.layer_map:
        mapping = {str(k): str(v) for k, v in d.layer_map.items()}
    else:
        mapping = dict(zip(default_feature_layers(student, example), default_feature_layers(teacher, example)))
    shapes = []
    for model, layers in ((student, list(mapping)), (teacher, list(mapping.values()))):
        model = copy.deepcopy(model).cpu().eval()
        try:
            tap = FeatureTap(model, layers)
        except ValueError as err:
            raise ValueError(f"distill.layer_map: {err}") from None
        with torch.no_grad():
            model(example.cpu())
        shapes.append([tuple(f.shape[-2:]) for f in tap.features()])
        tap.remove()
    for (s, t), a, b in zip(mapping.items(), *shapes):
        if a != b:
            raise ValueError(f"distill.layer_map: student layer {s} gives {a[0]}x{a[1]} maps but teacher layer {t} "
                             f"{b[0]}x{b[1]}; map layers of the same resolution (`distill.layer_map: {{{s}: ...}}`)")
    return mapping


def run_student(run: Run, cfg: Config, progress: bool = False, metric_runs: int = 20) -> dict[str, Any]:
    """Distil `distill.student` from the run's parent and (with `distill.baseline`) train it on the labels
    alone from the same initial weights, data order and augmentation; write RUN_DIR/student-ARCH-KD/
    {model.pt, model-labels-only.pt, metrics.json} and return the metrics."""
    d = cfg.distill
    data = run.task_data()
    device = resolve_device(cfg.fitness.device)
    teacher = run.parent()
    torch.manual_seed(stream_seed(cfg.seed, "distill.student", 2))  # the student's initial weights
    student = build_student(d, data.n_classes, data.input_shape)
    initial = copy.deepcopy(student)
    layer_map = student_layer_map(student, teacher, data.example_input(), d)
    aug = augment_kind(cfg, data.input_shape)
    models: dict[str, nn.Module] = {"teacher": teacher}
    summaries: dict[str, Any] = {}
    second = copy.deepcopy(student) if d.dml else None  # deep mutual learning: a peer, its own data order
    models["distilled"], peer, summaries["distilled"] = distill_model(student, teacher, data, d, cfg.seed, device,
                                                                      cfg.fitness, second, progress, aug, layer_map)
    if peer is not None:
        models["distilled_peer"] = peer
    if d.baseline:  # hinton with alpha 0 is cross-entropy on the labels: the same loop, the teacher unused
        alone = dataclasses.replace(d, kd="hinton", alpha=0.0)
        models["labels_only"], _, summaries["labels_only"] = distill_model(initial, teacher, data, alone, cfg.seed,
                                                                           device, None, None, progress, aug)
    result: dict[str, Any] = {"student": d.student, "kd": d.kd, "alpha": d.alpha, "layer_map": layer_map,
                              "epochs": d.epochs, "seed": cfg.seed}
    for key, model in models.items():
        result[key] = {"val_accuracy": accuracy(model, data.val_x, data.val_y),
                       "test": deployment_metrics(model, data.test_x, data.test_y, data.n_classes, runs=metric_runs),
                       **({"distill": summaries[key]} if key in summaries else {})}
    out = student_dir(run.dir, d.student, d.kd)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / DISTILLED_MODEL, lambda fh: torch.save(models["distilled"].state_dict(), fh), binary=True)
    if "labels_only" in models:
        atomic_write(out / STUDENT_LABELS_MODEL, lambda fh: torch.save(models["labels_only"].state_dict(), fh),
                     binary=True)
    write_json(out / DISTILL_METRICS, result)
    return result


def student_table(result: dict[str, Any]) -> str:
    """Teacher, distilled student and labels-only student side by side, on the test split."""
    head = (f"{'':<12} {'top1':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'params':>10} {'MACs':>12} {'ms@1':>7} "
            f"{'act MiB':>7}")
    lines = [head, "-" * len(head)]
    for key, what in ROWS:
        if key not in result:
            continue
        m = result[key]["test"]
        lines.append(f"{key:<12} {m['top1']:6.4f} {m['precision_macro']:6.4f} {m['recall_macro']:6.4f} "
                     f"{m['f1_macro']:6.4f} {m['n_params']:10,d} {m['macs']:12,d} "
                     f"{m['latency_ms']['cpu']['batch_1']:7.3f} {m['memory']['cpu']['activation_bytes'] / 2**20:7.2f}"
                     f"  {what}")
    lines.append(f"test split ({result['teacher']['test']['n_samples']} samples), macro precision / recall / F1; "
                 f"KD {result['kd']} (alpha {result['alpha']}), {result['epochs']} epochs each")
    return "\n".join(lines)
