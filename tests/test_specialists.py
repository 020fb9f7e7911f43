"""Specialists (Hinton et al. 2015, section 5): confused classes grouped, one specialist per group trained on its
classes plus a dustbin, combined with the generalist; `evoprune specialists` reports both on test."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from torch import nn

from evoprune.deploy.specialists import collapse, combine, confusable_groups, specialist_model


def test_classes_predicted_together_form_a_group():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(400, generator=gen), torch.rand(400, generator=gen)
    probs = torch.stack([a, a * 0.9, b, b * 1.1, torch.full((400,), 0.1)], dim=1)  # 0~1 and 2~3 co-vary
    probs = probs / probs.sum(1, keepdim=True)
    groups = confusable_groups(probs, 3, seed=0)
    assert sorted(map(tuple, groups)) == [(0, 1), (2, 3), (4,)]
    with pytest.raises(ValueError, match="between 2 and 4"):
        confusable_groups(probs, 5, seed=0)


def test_collapse_keeps_the_group_and_sums_the_rest():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    assert torch.allclose(collapse(p, [2, 0]), torch.tensor([[0.3, 0.1, 0.6]]))


def test_a_confident_active_specialist_decides_between_its_classes():
    general = torch.tensor([[2.0, 1.8, -1.0, -3.0]])  # class 0 just ahead of class 1
    says_one = torch.tensor([[-2.0, 4.0, -4.0]])  # specialist of {0, 1} + dustbin: clearly class 1
    q, active = combine(general, [([0, 1], says_one)], top_n=2)
    assert int(q.argmax()) == 1 and int(active) == 1 and torch.allclose(q.sum(), torch.tensor(1.0))
    q, active = combine(general, [([2, 3], torch.tensor([[5.0, -5.0, -5.0]]))], top_n=2)  # not in the top 2
    assert int(active) == 0 and torch.allclose(q, torch.softmax(general, 1), atol=1e-6)
    q, _ = combine(general, [], top_n=2)
    assert torch.allclose(q, torch.softmax(general, 1), atol=1e-6)


def test_a_specialist_starts_from_the_generalists_head_rows():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    spec = specialist_model(net, [3, 1])
    head = spec[3]
    assert head.out_features == 3 and torch.equal(head.weight[0], net[3].weight[3])
    assert torch.allclose(head.weight[2], net[3].weight[[0, 2, 4]].mean(0))
    assert net[3].out_features == 5  # the generalist is untouched
    assert spec(torch.zeros(2, 4)).shape == (2, 3)


def test_the_cli_trains_one_specialist_per_group_and_reports_with_and_without(tiny_run):
    code, out, err = run_cli(["specialists", str(tiny_run), "--groups", "2", "--set", "distill.epochs=1",
                              "--runs", "2", "--quiet"])
    assert code == 0, err
    doc = json.loads((tiny_run / "specialists" / "metrics.json").read_text())
    assert sorted(c for g in doc["groups"] for c in g) == list(range(10))
    assert len(doc["per_group"]) == len(doc["groups"]) and (tiny_run / "specialists" / "specialist-0.pt").is_file()
    assert 0 <= doc["combined_test_accuracy"] <= 1 and doc["cost"]["combine_ms_per_example"] > 0
    assert "(the generalist)" in out
    code, out, err = run_cli(["specialists", str(tiny_run), "--groups", "10"])
    assert code == 2 and "between 2 and 9" in err


def test_groups_of_your_own_by_name_or_index(tiny_run):
    code, out, err = run_cli(["specialists", str(tiny_run), "--classes", "3,5,8", "--classes", "1,7",
                              "--set", "distill.epochs=1", "--runs", "2", "--quiet"])
    assert code == 0, err
    doc = json.loads((tiny_run / "specialists" / "metrics.json").read_text())
    assert doc["groups"] == [[3, 5, 8], [1, 7]] and len(doc["per_group"]) == 2
    code, out, err = run_cli(["specialists", str(tiny_run), "--classes", "3,eleven"])
    assert code == 2 and "'eleven' is not a class" in err
    code, out, err = run_cli(["specialists", str(tiny_run), "--classes", "3,5", "--classes", "5,6"])
    assert code == 2 and "disjoint" in err
