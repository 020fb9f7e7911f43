"""KD losses (gradients reach the student and the adapters; each drives a tiny search) and `evoprune distill`."""
from __future__ import annotations

import json
import random

import pytest
import torch

from evoprune import build_fitness, load_config
from evoprune.config import FEATURE_KD_LOSSES, KD_LOSSES, LOGIT_KD_LOSSES
from evoprune.fitness.losses import (KDLoss, attention_map, default_feature_layers, logit_kd, logit_kd_per_model,
                                     mutual_kl, teacher_feature_targets)
from evoprune.fitness.evaluators import SequentialEvaluator
from evoprune.deploy.distill import augment, augment_kind
from evoprune.parent.models import cifar_resnet
from evoprune.evolve.population import initial_population
from evoprune.run.search import RunDirSearch
from conftest import TINY, run_cli


def _cli(argv: list) -> tuple[int, str, str]:
    return run_cli(argv)


def _student(fitness):
    return fitness.subnet(fitness.space.uniform(keep=0.5)).train()


@pytest.mark.parametrize("kind", KD_LOSSES)
def test_gradients_reach_the_student_and_the_adapters(tiny_fitness, kind):
    parent, x, y = tiny_fitness.parent, tiny_fitness.task.ft_x[:16], tiny_fitness.task.ft_y[:16]
    student = _student(tiny_fitness)
    layers = default_feature_layers(parent, tiny_fitness.example_input)
    channels = [t.shape[1] for t in teacher_feature_targets(parent, layers, "feature", x[:1])]
    kd = KDLoss(kind, 4.0, 0.9, student, None, layers, channels, tiny_fitness.example_input)
    targets = teacher_feature_targets(parent, layers, kind, x) if kind in FEATURE_KD_LOSSES else None
    with torch.no_grad():
        t = parent(x)
    loss = kd(student(x), t, y, targets)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    stem = student.stem[0].weight.grad
    assert stem is not None and stem.abs().sum() > 0
    if kind == "feature":
        assert len(kd.adapters) == len(layers)
        assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in kd.adapters)
        # the adapters map the pruned width to the teacher's
        assert [a.weight.shape[0] for a in kd.adapters] == channels
        assert [a.weight.shape[1] for a in kd.adapters] != channels
    if kind in FEATURE_KD_LOSSES:  # the feature term on its own also reaches the student's stem
        student.zero_grad()
        student(x)
        kd.feature_term(targets).backward()
        assert student.stem[0].weight.grad.abs().sum() > 0
    kd.close()
    assert not student.stem[0]._forward_hooks and all(not m._forward_hooks for m in student.modules())


@pytest.mark.parametrize("kind", LOGIT_KD_LOSSES)
def test_population_form_equals_one_model_at_a_time(kind):
    gen = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(3, 8, 10, generator=gen), torch.randn(8, 10, generator=gen), torch.randint(0, 10, (8,))
    per = logit_kd_per_model(kind, s, t, y, 3.0, 0.7)
    assert per.shape == (3,)
    for i in range(3):
        assert per[i] == pytest.approx(float(logit_kd(kind, s[i], t, y, 3.0, 0.7)), rel=1e-5)
    assert float(logit_kd(kind, t, t, y, 3.0, 1.0)) == pytest.approx(0.0, abs=1e-6)  # the teacher itself: no loss


def test_mutual_learning_gradient_reaches_the_student_not_the_peer():
    student = torch.randn(8, 10, requires_grad=True)
    peer = torch.randn(8, 10, requires_grad=True)
    loss = mutual_kl(student, peer)
    loss.backward()
    assert loss > 0 and student.grad.abs().sum() > 0 and peer.grad is None
    assert float(mutual_kl(peer.detach(), peer.detach())) == pytest.approx(0.0, abs=1e-6)


def test_attention_map_is_normalised_and_width_free():
    f = torch.randn(4, 6, 5, 5)
    a = attention_map(f)
    assert a.shape == (4, 25) and torch.allclose(a.norm(dim=1), torch.ones(4))
    assert torch.allclose(attention_map(torch.cat([f, f], 1)), a, atol=1e-6)  # the channel count does not matter


def test_default_feature_layers_are_the_stages(tiny_fitness):
    assert default_feature_layers(tiny_fitness.parent, tiny_fitness.example_input) == ["layers.0", "layers.1"]
    assert default_feature_layers(cifar_resnet(20, 10, 3, 8), torch.zeros(1, 3, 32, 32)) == \
        ["layers.0", "layers.1", "layers.2"]


def test_unknown_feature_layer_is_named(tiny_fitness):
    with pytest.raises(ValueError, match="nope"):
        KDLoss("attention", 4.0, 0.9, _student(tiny_fitness), None, ["nope"], [8], tiny_fitness.example_input)


@pytest.mark.parametrize("kind", KD_LOSSES)
def test_each_loss_drives_a_tiny_search(tmp_path, kind):
    cfg = load_config(overrides=TINY + [f"fitness.kd={kind}", "search.generations=1", "search.population=4",
                                        "search.offspring=4"])
    fitness = build_fitness(cfg, tmp_path, progress=False)
    if kind in FEATURE_KD_LOSSES:
        assert fitness.evaluator.kind == "sequential" and kind in fitness.evaluator_info["reason"]
    state = RunDirSearch(fitness, tmp_path, progress=False, log=lambda s: None).run()
    front = json.loads((tmp_path / "front.json").read_text())["front"]
    assert front and all(0 <= m["accuracy"] <= 1 for m in front)
    assert len(state.records) >= 4 and all(r.objectives.kd_loss == r.objectives.kd_loss for r in state.records)


def test_batched_request_falls_back_to_sequential_for_feature_losses():
    cfg = load_config(overrides=TINY + ["fitness.kd=attention", "evaluator.kind=batched"])
    fitness = build_fitness(cfg, None, progress=False)
    assert fitness.evaluator.kind == "sequential"
    assert "logit losses" in fitness.evaluator_info["reason"] and "attention" in fitness.evaluator_info["reason"]


def test_batched_follows_the_logit_loss():
    from evoprune.fitness.evaluators import BatchedEvaluator

    cfg = load_config(overrides=TINY + ["fitness.kd=smooth_l1", "evaluator.kind=batched"])
    fitness = build_fitness(cfg, None, progress=False)
    assert fitness.evaluator.kind == "batched"  # the proof passed with this loss in both forms
    g = [gen for gen, _ in initial_population(fitness.space, cfg.population, 2, random.Random(3))]
    bat = BatchedEvaluator(fitness.task, fitness.parent, fitness.space).evaluate(g)
    seq = SequentialEvaluator(fitness.task, fitness.parent, threads=1).evaluate(g)
    for b, s in zip(bat, seq):
        assert b.kd_loss == pytest.approx(s.kd_loss, rel=2e-2)


def test_feature_loss_is_bitwise_reproducible_across_threads():
    cfg = load_config(overrides=TINY + ["fitness.kd=feature"])
    fitness = build_fitness(cfg, None, progress=False)
    g = [gen for gen, _ in initial_population(fitness.space, cfg.population, 3, random.Random(5))]
    one = SequentialEvaluator(fitness.task, fitness.parent, threads=1).evaluate(g)
    two = SequentialEvaluator(fitness.task, fitness.parent, threads=2).evaluate(g)
    assert [(o.accuracy, o.kd_loss) for o in one] == [(o.accuracy, o.kd_loss) for o in two]


def test_augmentation():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    assert augment_kind(load_config(), (1, 8, 8)) == "none"
    assert augment_kind(load_config(overrides=["data.name=cifar10"]), (3, 32, 32)) == "crop_flip"
    assert augment_kind(load_config(overrides=["distill.augment=crop"]), (1, 8, 8)) == "crop"
    out = augment(x, "crop_flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out, augment(x, "crop_flip", torch.Generator().manual_seed(0)))  # seeded
    assert torch.equal(augment(x, "none", torch.Generator()), x)
    flip = augment(x, "crop", torch.Generator().manual_seed(1))
    # a crop shifts by at most the padding (2 px for 16 px): some window of the input survives
    assert flip.shape == x.shape


def test_distill_cli_writes_test_metrics(tiny_run):
    rc, out, err = _cli(["distill", tiny_run, "--pick", 0, "--quiet", "--runs", 2, "--set", "distill.epochs=2"])
    assert rc == 0, err
    assert "test accuracy" in out and "parent" in out
    d = tiny_run / "distill-0"
    m = json.loads((d / "metrics.json").read_text())
    assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["parent_test_accuracy"] <= 1
    assert m["test"]["n_samples"] == json.loads((tiny_run / "task.json").read_text())["n_test"]  # the test split
    assert m["distill"]["epochs"] == 2 and m["distill"]["kd"] == "hinton" and not m["distill"]["dml"]
    assert m["val_accuracy"] >= m["val_accuracy_before"] - 0.05  # training helped (or did no harm)
    state = torch.load(d / "model.pt", weights_only=True)
    from evoprune import load_run

    model = load_run(tiny_run).subnet(0, "pruned")
    model.load_state_dict(state)  # the distilled weights fit front member 0's pruned shape
    assert m["initial_weights"] == "finetuned"  # it starts where the front's figure came from
    history = m["distill"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(0 <= h["val_accuracy"] <= 1 for h in history)
    assert history[-1]["val_accuracy"] == m["val_accuracy"] and (d / "curve.png").is_file()


@pytest.mark.parametrize("extra", [["--set", "distill.kd=feature"], ["--set", "distill.kd=attention"],
                                   ["--set", "distill.kd=mse"]])
def test_distill_with_each_loss(tiny_run, extra):
    rc, out, err = _cli(["distill", tiny_run, "--pick", 1, "--quiet", "--runs", 1, "--set", "distill.epochs=1",
                         *extra])
    assert rc == 0, err
    m = json.loads((tiny_run / "distill-1" / "metrics.json").read_text())
    assert m["distill"]["kd"] == extra[1].split("=")[1]
    if m["distill"]["kd"] in FEATURE_KD_LOSSES:
        assert m["distill"]["feature_layers"] == ["layers.0", "layers.1"]


@pytest.mark.parametrize("pick2", [None, 1])
def test_deep_mutual_learning(tiny_run, pick2):
    more = [] if pick2 is None else ["--pick2", pick2]
    rc, out, err = _cli(["distill", tiny_run, "--pick", 0, "--quiet", "--runs", 1, "--set", "distill.epochs=2",
                         "--set", "distill.dml=true", *more])
    assert rc == 0, err
    d = tiny_run / "distill-0"
    m = json.loads((d / "metrics.json").read_text())
    assert m["distill"]["dml"] and len(m["distill"]["final_loss"]) == 2
    assert m["second"]["copy"] == (pick2 is None) and 0 <= m["second"]["test_accuracy"] <= 1
    assert (d / "model2.pt").is_file()
    a, b = torch.load(d / "model.pt", weights_only=True), torch.load(d / "model2.pt", weights_only=True)
    if pick2 is None:  # two copies of one subnet, kept apart by their data orders
        assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("argv, needle", [
    (["--pick", 500], "--pick 500"),
    (["--pick", 0, "--pick2", 1], "distill.dml"),
    (["--pick", 0, "--set", "search.generations=3"], "distill.*"),
    (["--pick", 0, "--set", "distill.epochs=0"], "distill.epochs"),
    (["--pick", 0, "--set", "distill.kd=feature", "--set", "distill.feature_layers=[nope]"], "nope"),
])
def test_distill_bad_input_exits_2(tiny_run, argv, needle):
    rc, out, err = _cli(["distill", tiny_run, "--quiet", *argv])
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_distill_not_a_run(tmp_path):
    rc, out, err = _cli(["distill", tmp_path, "--pick", 0])
    assert rc == 2 and "not an evoprune run" in err


def test_search_with_an_unknown_feature_layer_exits_2_before_any_work(tmp_path):
    rc, out, err = _cli(["search", "--out", tmp_path / "r", "--quiet", "--set", "fitness.kd=attention",
                         "--set", "fitness.feature_layers=[layers.0, nope]"])
    assert rc == 2 and "fitness.feature_layers" in err and "nope" in err and not (tmp_path / "r").exists()
