"""Acceptance for real parents: a one-generation search on 32x32 images for a CIFAR ResNet and
torchvision ResNet-18, GoogLeNet and MobileNetV2; every front member materialises from the run
directory and runs a forward pass at the reported parameter count."""
from __future__ import annotations

import io
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evoprune import load_config, load_run
from evoprune.cli.main import main
from evoprune.pruning.importance import build_space
from evoprune.metrics import count_params
from evoprune.config.archs import input_channels
from evoprune.parent.models import build_model
from evoprune.pruning.materialise import materialise

ONE_GENERATION = ["search.population=4", "search.offspring=4", "search.generations=1", "fitness.steps=2",
                  "fitness.batch_size=16", "fitness.finetune_samples=32", "parent.epochs=1",
                  "parent.batch_size=16", "population.criteria=[l1,taylor,random]"]


def _images(root: Path, classes: int = 4, per_class: int = 10, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.integers(0, 128, (size, size, 3)) + 30 * c).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / f"c{c}" / f"{i}.png")
    return root


def _search(out: Path, overrides: list[str]) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        rc = main(["search", "--out", str(out), "--quiet", *[a for o in overrides for a in ("--set", o)]])
    assert rc == 0, stderr.getvalue()
    return stdout.getvalue()


def _check_front(out: Path, input_shape: tuple[int, ...]) -> None:
    run = load_run(out)
    assert tuple(run.task["input_shape"]) == input_shape and run.front
    parent_params = run.parent_summary["n_params"]
    for i, member in enumerate(run.front):
        model = run.subnet(i)
        with torch.no_grad():
            logits = model(torch.randn(2, *input_shape))
        assert logits.shape == (2, run.task["n_classes"]) and torch.isfinite(logits).all()
        assert count_params(model) == member["n_params"] < parent_params


@pytest.mark.parametrize("arch", ["resnet20", "resnet18", "googlenet", "mobilenet_v2"])
def test_one_generation_search_on_imagefolder(tmp_path, arch):
    root = _images(tmp_path / "images")
    start = time.perf_counter()
    stdout = _search(tmp_path / "run", ONE_GENERATION + [f"parent.arch={arch}", "data.name=imagefolder",
                                                         f"data.root={root}"])
    assert f"parent {arch}" in stdout and "(trained)" in stdout
    _check_front(tmp_path / "run", (3, 32, 32))
    print(f"{arch}: {time.perf_counter() - start:.1f}s")


def test_digits_resized_and_repeated_for_a_torchvision_parent(tmp_path):
    """Grayscale 8x8 digits as 3x32x32 input of ResNet-18 (and 1x32x32 of a CIFAR ResNet-20)."""
    small = ["data.max_train_samples=64", "data.max_eval_samples=32", "data.image_size=32"]
    _search(tmp_path / "tv", ONE_GENERATION + small + ["parent.arch=resnet18"])
    _check_front(tmp_path / "tv", (3, 32, 32))
    _search(tmp_path / "cifar", ONE_GENERATION + small + ["parent.arch=resnet20", "parent.width=8"])
    _check_front(tmp_path / "cifar", (1, 32, 32))


@pytest.mark.parametrize("arch", ["resnet32", "resnet56", "resnet34", "resnet50",
                                  pytest.param("vgg11_bn", marks=pytest.mark.slow),  # 130M parameters
                                  pytest.param("vgg16_bn", marks=pytest.mark.slow)])
def test_other_listed_archs_trace_and_prune(arch):
    """Every listed parent traces into prunable groups; a half-width subnet really shrinks and runs."""
    torch.manual_seed(0)
    channels = input_channels(arch) or 3
    model = build_model(arch, 5, channels).eval()
    x = torch.randn(4, channels, 32, 32)
    cfg = load_config(overrides=[f"parent.arch={arch}"])
    space = build_space(model, x[:1], cfg.space, ["l1"], x, torch.arange(4) % 5)
    assert len(space.groups) > 3
    sub = materialise(model, space.uniform(0.5), x[:1]).eval()
    with torch.no_grad():
        assert sub(x).shape == (4, 5)
    assert count_params(sub) < 0.6 * count_params(model)
