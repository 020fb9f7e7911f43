"""`evoprune distill --student ARCH`: any architecture distilled from a run's parent, side by side with the same
student trained on the labels alone (same initial weights, data order and augmentation)."""
from __future__ import annotations

import json

import torch
from conftest import run_cli

from evoprune.run.files import DISTILL_METRICS, DISTILLED_MODEL, STUDENT_LABELS_MODEL, student_dir

ONE_EPOCH = ["--set", "distill.epochs=1", "--set", "distill.batch_size=64", "--runs", "2", "--quiet"]


def test_a_student_is_distilled_and_trained_alone_side_by_side(tiny_run):
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "resnet20", "--set", "distill.student_width=4",
                              *ONE_EPOCH])
    assert code == 0, err
    assert "teacher" in out and "distilled" in out and "labels_only" in out
    where = student_dir(tiny_run, "resnet20", "hinton")
    doc = json.loads((where / DISTILL_METRICS).read_text())
    for key in ("teacher", "distilled", "labels_only"):
        assert {"top1", "precision_macro", "recall_macro", "f1_macro", "n_params", "macs", "latency_ms",
                "memory"} <= set(doc[key]["test"])
    assert doc["distilled"]["test"]["n_params"] == doc["labels_only"]["test"]["n_params"]
    assert doc["distilled"]["test"]["n_params"] != doc["teacher"]["test"]["n_params"]
    a = torch.load(where / DISTILLED_MODEL, weights_only=True)
    b = torch.load(where / STUDENT_LABELS_MODEL, weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the teacher changed what the student learnt


def test_without_the_teacher_term_both_students_are_the_same_training(tiny_run):
    """alpha 0 makes the KD loss cross-entropy: the two trainings must then be identical, bit for bit, which
    shows they share initial weights, data order, augmentation and recipe."""
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "simple_cnn", "--set", "distill.student_width=4",
                              "--set", "distill.alpha=0", *ONE_EPOCH])
    assert code == 0, err
    where = student_dir(tiny_run, "simple_cnn", "hinton")
    a = torch.load(where / DISTILLED_MODEL, weights_only=True)
    b = torch.load(where / STUDENT_LABELS_MODEL, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_feature_kd_pairs_the_stages_or_follows_a_layer_map(tiny_run):
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "resnet20", "--set", "distill.student_width=4",
                              "--set", "distill.kd=attention", "--no-baseline", *ONE_EPOCH])
    assert code == 0, err
    doc = json.loads((student_dir(tiny_run, "resnet20", "attention") / DISTILL_METRICS).read_text())
    assert doc["layer_map"] and "labels_only" not in doc
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "simple_cnn", "--set", "distill.dml=true",
                              "--set", "distill.student_width=4", "--no-baseline", *ONE_EPOCH])
    assert code == 0 and "distilled_peer" in out, err
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "resnet20", "--set", "distill.kd=feature",
                              "--set", "distill.layer_map={layers.2: layers.0}", *ONE_EPOCH])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "same resolution" in err, err


def test_a_wrong_student_is_one_line(tiny_run):
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "resnet21", *ONE_EPOCH])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "resnet20" in err, err
    code, out, err = run_cli(["distill", str(tiny_run), "--student", "resnet20", "--pick", "0"])
    assert code == 2
