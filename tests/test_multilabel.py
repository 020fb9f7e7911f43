"""Multi-label tasks: images with several binary attributes in CelebA's layout (here: digits with the attributes
even, greater than four and has a loop), searched, distilled, exported, predicted and measured end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from evoprune import Fitness, load_config
from evoprune.fitness.losses import binary_kd, hinton_kd

ATTRIBUTES = ("even", "greater_than_4", "has_loop")
LOOPS = {0, 6, 8, 9}
SMALL = ["parent.width=8", "parent.epochs=4", "search.population=4", "search.offspring=4", "search.generations=1",
         "search.patience=0", "fitness.steps=3", "fitness.finetune_samples=128", "fitness.val_samples=128"]


def attributes_of(digit: int) -> list[int]:
    return [int(digit % 2 == 0), int(digit > 4), int(digit in LOOPS)]


@pytest.fixture(scope="module")
def celeba_like(tmp_path_factory):
    """The digits as PNG files, CelebA's attribute file (a count line, a header, +-1 values) and its
    partition file."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("faces")
    d = load_digits()
    attr = [str(len(d.target)), " ".join(ATTRIBUTES)]
    part = []
    for i, (img, digit) in enumerate(zip(d.images, d.target)):
        name = f"{i:06d}.png"
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8), "L").save(root / name)
        attr.append(f"{name} " + " ".join("1" if a else "-1" for a in attributes_of(int(digit))))
        part.append(f"{name} {0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)}")
    (root / "list_attr_celeba.txt").write_text("\n".join(attr) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    return root


@pytest.fixture(scope="module")
def run_dir(celeba_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "run"
    code, _, err = run_cli(["search", "--out", str(out), "--quiet", "--set=data.name=attributes",
                            f"--set=data.root={celeba_like}", "--set=data.task=multilabel",
                            *[f"--set={s}" for s in SMALL]])
    assert code == 0, err
    return out


def test_the_binary_kd_is_zero_on_the_teachers_own_outputs_and_bce_without_the_teacher():
    z = torch.randn(8, 3)
    assert float(binary_kd(z, z, 4.0)) == pytest.approx(0.0, abs=1e-6)
    y = (torch.rand(8, 3) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert float(hinton_kd(z, torch.randn(8, 3), y, 4.0, 0.0)) == pytest.approx(float(bce), abs=1e-6)


def test_a_multilabel_search_scores_mean_attribute_accuracy(run_dir):
    task = json.loads((run_dir / "task.json").read_text())
    assert task["task"] == "multilabel" and task["n_classes"] == 3
    assert task["evaluator"]["kind"] == "sequential" or "multi-label" in task["evaluator"]["reason"]
    front = json.loads((run_dir / "front.json").read_text())
    assert front["front"] and front["parent"]["accuracy"] > 0.7  # three easy attributes, learnt
    assert all(m["size_ratio"] < 1 for m in front["front"])


def test_distill_export_predict_and_metrics_work_on_it(run_dir, celeba_like, tmp_path):
    code, out, err = run_cli(["distill", str(run_dir), "--pick", "0", "--set", "distill.epochs=1", "--runs", "2",
                              "--quiet"])
    assert code == 0, err
    doc = json.loads((run_dir / "distill-0" / "metrics.json").read_text())
    assert len(doc["test"]["attribute_accuracy"]) == 3 and 0 <= doc["test"]["map"] <= 1
    code, out, err = run_cli(["export", str(run_dir), "--pick", "0", "--out", str(tmp_path / "e"), "--runs", "2"])
    assert code == 0, err
    assert json.loads((tmp_path / "e" / "export.json").read_text())["task"] == "multilabel"
    code, out, err = run_cli(["predict", str(tmp_path / "e"), str(celeba_like / "000000.png"), "--top-k", "3"])
    assert code == 0 and all(a in out for a in ATTRIBUTES), err
    code, out, err = run_cli(["distill", str(run_dir), "--student", "simple_cnn", "--set", "distill.student_width=4",
                              "--set", "distill.epochs=1", "--set", "distill.kd=attention", "--runs", "2", "--quiet"])
    assert code == 0, err
    code, out, err = run_cli(["specialists", str(run_dir), "--groups", "2"])
    assert code == 2 and "multi-label" in err


def test_from_model_takes_attribute_rows_and_can_score_map():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor([attributes_of(int(t)) for t in d.target], dtype=torch.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    cfg = load_config(overrides=["fitness.steps=2", "fitness.finetune_samples=128", "fitness.val_samples=128",
                                 "fitness.multilabel_score=map"])
    fitness = Fitness.from_model(model, (x[:1400], y[:1400]), (x[1400:], y[1400:]), cfg)
    assert fitness.data.n_classes == 3 and 0 <= fitness.parent_accuracy <= 1
    [obj] = fitness([fitness.space.uniform(0.5)])
    assert 0 <= obj.accuracy <= 1 and obj.size_ratio < 1
    with pytest.raises(ValueError, match="0 or 1"):
        Fitness.from_model(model, (x[:100], y[:100] * 2), (x[1400:], y[1400:]), cfg)
