"""Deployment metrics: the documented keys, hand-checked accuracy figures, sane sizes, latency and memory."""
from __future__ import annotations

import io

import pytest
import torch

from evoprune.deploy.metrics import (activation_bytes, classification_metrics, deployment_metrics, latency_ms,
                             state_dict_bytes)
from evoprune.metrics import count_params
from evoprune.parent.models import simple_cnn

KEYS = {"top1", "top5", "precision_macro", "recall_macro", "f1_macro", "n_samples", "n_params", "macs",
        "state_dict_bytes", "latency_ms", "memory", "threads"}


def test_classification_metrics_by_hand():
    # y = [0, 0, 1, 1], predictions [0, 1, 1, 1]: precision (1, 2/3), recall (1/2, 1), F1 (2/3, 4/5)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 3.0]])
    m = classification_metrics(logits, torch.tensor([0, 0, 1, 1]), 2)
    assert "top5" not in m  # fewer than 5 classes
    assert m["top1"] == pytest.approx(0.75)
    assert m["precision_macro"] == pytest.approx(5 / 6)
    assert m["recall_macro"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_top5():
    logits = torch.arange(10.0).repeat(3, 1)  # ranks classes 9, 8, 7, 6, 5 first
    m = classification_metrics(logits, torch.tensor([9, 5, 0]), 10)
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)


def test_deployment_metrics_keys_and_values():
    torch.manual_seed(0)
    big, small = simple_cnn(10, 1, 16).eval(), simple_cnn(10, 1, 4).eval()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    mb = deployment_metrics(big, x, y, 10, batch=16, runs=3, warmup=1, devices=["cpu"])
    ms = deployment_metrics(small, x, y, 10, batch=16, runs=3, warmup=1, devices=["cpu"])
    for m, model in ((mb, big), (ms, small)):
        assert KEYS <= set(m)
        assert 0 <= m["top1"] <= m["top5"] <= 1 and 0 <= m["f1_macro"] <= 1 and m["n_samples"] == 40
        assert m["n_params"] == count_params(model) and m["macs"] > 0
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        assert m["state_dict_bytes"] == buf.tell()
        assert set(m["latency_ms"]["cpu"]) == {"batch_1", "batch_16"}
        assert all(0 < v < 10_000 for v in m["latency_ms"]["cpu"].values())
        mem = m["memory"]["cpu"]
        assert mem["batch"] == 16 and mem["activation_bytes"] > x[:16].numel() * 4 and mem["rss_growth_bytes"] >= 0
    assert ms["n_params"] < mb["n_params"] and ms["macs"] < mb["macs"]
    assert ms["state_dict_bytes"] < mb["state_dict_bytes"]
    assert ms["memory"]["cpu"]["activation_bytes"] < mb["memory"]["cpu"]["activation_bytes"]


def test_activation_bytes_counts_every_output():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.ReLU()).eval()
    x = torch.zeros(2, 1, 4, 4)
    assert activation_bytes(model, x) == 4 * (2 * 1 * 16 + 2 * 3 * 16 * 2)  # input + conv + relu outputs


def test_latency_and_size_helpers():
    model = simple_cnn(10, 1, 4).eval()
    assert latency_ms(model, torch.zeros(1, 1, 8, 8), runs=3, warmup=1) > 0
    assert state_dict_bytes(model) > 4 * count_params(model)  # the weights plus the file's structure


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_metrics():
    m = deployment_metrics(simple_cnn(10, 1, 8), torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,)), 10,
                           batch=8, runs=3, warmup=1)
    assert m["latency_ms"]["cuda"]["batch_1"] > 0 and m["memory"]["cuda"]["peak_allocated_bytes"] > 0
