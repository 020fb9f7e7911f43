"""Fitness as a library: genomes or any model in, Objectives out; cached, deterministic."""
from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from evoprune import Genome, Objectives, build_fitness, load_config
from evoprune.metrics import count_params
from evoprune.pruning.draw import pruned_genome


def _count_calls(fitness, monkeypatch) -> list[list[str]]:
    """Wrap the evaluator so each call's genome keys are recorded."""
    calls: list[list[str]] = []
    original = fitness.evaluator.evaluate

    def evaluate(genomes, on_done=None):
        calls.append([g.key() for g in genomes])
        return original(genomes, on_done)

    monkeypatch.setattr(fitness.evaluator, "evaluate", evaluate)
    return calls


def _fresh_genome(fitness, seed: int) -> Genome:
    """A valid genome not yet in the fitness cache."""
    rng = random.Random(seed)
    while True:
        g = pruned_genome(fitness.space, rng.choice(fitness.space.criteria), rng.uniform(0.2, 0.8), 0.2, rng)
        if g.key() not in fitness.cache:
            return g


def test_objectives_of_a_genome(tiny_fitness):
    g = tiny_fitness.space.uniform(keep=0.5)
    out = tiny_fitness([g])
    assert isinstance(out, list) and len(out) == 1
    o = out[0]
    assert isinstance(o, Objectives)
    assert o.status == "ok"
    assert 0.0 <= o.accuracy <= 1.0
    assert 0.0 < o.size_ratio <= 1.0
    assert 0 < o.n_params < tiny_fitness.parent_n_params
    assert 0 < o.macs < tiny_fitness.parent_macs
    assert o.params_ratio == pytest.approx(o.n_params / tiny_fitness.parent_n_params)
    assert o.macs_ratio == pytest.approx(o.macs / tiny_fitness.parent_macs)
    assert tiny_fitness.cfg.search.size_metric == "params" and o.size_ratio == o.params_ratio
    assert math.isfinite(o.kd_loss) and o.kd_loss >= 0  # steps > 0: a fine-tune ran
    assert o.seconds >= 0
    # accuracy is measured on val_samples validation images: a multiple of 1/128
    n_val = tiny_fitness.cfg.fitness.val_samples
    assert round(o.accuracy * n_val) == pytest.approx(o.accuracy * n_val)
    assert o.values("pareto") == (o.accuracy, o.size_ratio)


def test_results_in_input_order(tiny_fitness):
    space = tiny_fitness.space
    genomes = [space.uniform(keep=k) for k in (0.9, 0.2, 0.6)]
    objs = tiny_fitness(genomes)
    sizes = [o.n_params for o in objs]
    assert sizes[1] < sizes[2] < sizes[0]
    assert [o.n_params for o in tiny_fitness(list(reversed(genomes)))] == list(reversed(sizes))


def test_cache_avoids_re_evaluation(tiny_fitness, monkeypatch):
    calls = _count_calls(tiny_fitness, monkeypatch)
    g = _fresh_genome(tiny_fitness, 0)
    first = tiny_fitness([g])[0]
    assert calls == [[g.key()]]
    assert tiny_fitness.cache[g.key()] == first
    # the same genome again, an equal genome rebuilt from JSON, and duplicates in one call
    again = tiny_fitness([g])[0]
    rebuilt = tiny_fitness([Genome.from_json(g.to_json())])[0]
    both = tiny_fitness([g, g])
    assert calls == [[g.key()]]
    assert again is first and rebuilt is first and both == [first, first]
    # a call mixing cached and new genomes evaluates only the new ones, each once
    h = _fresh_genome(tiny_fitness, 1)
    out = tiny_fitness([g, h, g, h])
    assert calls == [[g.key()], [h.key()]]
    assert out[0] is first and out[1] is out[3] and out[1] == tiny_fitness.cache[h.key()]


def test_on_done_reports_each_new_evaluation(tiny_fitness):
    done = []
    genomes = [_fresh_genome(tiny_fitness, s) for s in (10, 11)]
    tiny_fitness(genomes + genomes[:1], on_done=done.append)
    assert sum(done) == len({g.key() for g in genomes})
    tiny_fitness(genomes, on_done=done.append)  # all cached: no progress to report
    assert sum(done) == 2


def test_invalid_genomes_rejected_before_any_evaluation(tiny_fitness, monkeypatch):
    calls = _count_calls(tiny_fitness, monkeypatch)
    space = tiny_fitness.space
    good = _fresh_genome(tiny_fitness, 2)
    bad = [space.full().with_group("stem.0", [0]),  # below the floor
           space.full().with_group("stem.0", [0, 1, 99]),  # out of range
           Genome({"stem.0": [0, 1]})]  # missing groups
    for b in bad:
        with pytest.raises(ValueError):
            tiny_fitness([good, b])
    assert calls == []
    assert good.key() not in tiny_fitness.cache


def test_fresh_fitness_gives_identical_objectives(tiny_fitness, tiny_cfg):
    """Same config and genome -> same objectives in a new Fitness, in any evaluation order."""
    space = tiny_fitness.space
    a, b = space.uniform(keep=0.4, criterion="l1"), space.uniform(keep=0.7, criterion="taylor")
    first = tiny_fitness([a, b])
    fresh = build_fitness(tiny_cfg, run_dir=None, progress=False)
    assert fresh.space.to_json() == space.to_json()
    assert fresh.parent_summary() == tiny_fitness.parent_summary()
    second = list(reversed(fresh([b, a])))  # the other order
    for x, y in zip(first, second):
        assert (x.accuracy, x.n_params, x.macs, x.size_ratio, x.status) == \
               (y.accuracy, y.n_params, y.macs, y.size_ratio, y.status)
        assert x.kd_loss == pytest.approx(y.kd_loss, rel=1e-5)


def test_evaluate_model_on_the_parent(tiny_fitness):
    before = {k: v.clone() for k, v in tiny_fitness.parent.state_dict().items()}
    o = tiny_fitness.evaluate_model(tiny_fitness.parent)
    assert o.size_ratio == 1.0 and o.params_ratio == 1.0 and o.macs_ratio == 1.0
    assert o.n_params == tiny_fitness.parent_n_params
    assert o.accuracy == tiny_fitness.parent_accuracy
    assert math.isnan(o.kd_loss)  # no fine-tune
    after = tiny_fitness.parent.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not tiny_fitness.parent.training


def test_evaluate_model_on_a_plain_module(tiny_fitness):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    o = tiny_fitness.evaluate_model(model)
    assert o.n_params == count_params(model) == 64 * 16 + 16 + 16 * 10 + 10
    assert o.size_ratio == pytest.approx(o.n_params / tiny_fitness.parent_n_params)
    assert 0.0 <= o.accuracy <= 1.0 and o.status == "ok"
    # with finetune=True the KD fine-tune runs on a copy: the model given is untouched
    before = [p.detach().clone() for p in model.parameters()]
    tuned = tiny_fitness.evaluate_model(model, finetune=True)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert math.isfinite(tuned.kd_loss) and tuned.n_params == o.n_params
    # it is the same fine-tune a genome gets: a pruned subnet scores as its genome does
    g = tiny_fitness.space.uniform(keep=0.5)
    via_model = tiny_fitness.evaluate_model(tiny_fitness.subnet(g), finetune=True)
    via_genome = tiny_fitness([g])[0]
    assert (via_model.accuracy, via_model.n_params, via_model.macs) == \
           (via_genome.accuracy, via_genome.n_params, via_genome.macs)


def test_readme_api_uniform(tiny_fitness):
    space = tiny_fitness.space
    g = space.uniform(keep=0.5)
    space.validate(g)
    assert g.widths() == {s.name: s.n_channels // 2 for s in space.groups}
    (o,) = tiny_fitness([g])
    assert o.size_ratio < 0.5  # halving every layer roughly quarters the parameters
    assert o.n_params == count_params(tiny_fitness.subnet(g))


def test_size_metric_macs(tiny_overrides):
    cfg = load_config(overrides=tiny_overrides + ["search.size_metric=macs", "fitness.steps=0",
                                                       "fitness.adaptive_bn=0"])
    fitness = build_fitness(cfg, progress=False)
    (o,) = fitness([fitness.space.uniform(keep=0.5)])
    assert o.size_ratio == o.macs_ratio != o.params_ratio
    assert math.isnan(o.kd_loss)  # steps=0, adaptive_bn=0: scored as pruned
    assert o.accuracy == fitness.evaluate_model(fitness.subnet(fitness.space.uniform(keep=0.5))).accuracy


def test_non_finite_fine_tune_scores_worst(tiny_overrides):
    cfg = load_config(overrides=tiny_overrides + ["fitness.lr=1.0e+30", "fitness.momentum=0.0"])
    fitness = build_fitness(cfg, progress=False)
    g = fitness.space.uniform(keep=0.5)
    with pytest.warns(UserWarning, match="non-finite"):
        (o,) = fitness([g])
    assert o.status == "nonfinite" and o.accuracy == 0.0
    assert 0.0 < o.size_ratio < 1.0


def test_fitness_lr_in_scientific_notation(tiny_overrides):
    """Learning rates are usually written 1e-3 (PyYAML alone would read that as a string)."""
    cfg = load_config(overrides=tiny_overrides + ["fitness.lr=1e-3"])
    assert cfg.fitness.lr == 1e-3


def test_auto_picks_the_same_evaluator_and_objectives_every_time(tiny_overrides):
    """auto follows a fixed rule, not a timing, so one config always gives the same objectives."""
    results = []
    for _ in range(2):
        fitness = build_fitness(load_config(overrides=tiny_overrides + ["fitness.steps=20"]), progress=False)
        rng = random.Random(0)
        genomes = [pruned_genome(fitness.space, rng.choice(fitness.space.criteria), rng.uniform(0.1, 0.85), 0.1, rng)
                   for _ in range(6)]
        results.append((fitness.evaluator.kind, [(o.accuracy, o.n_params, o.kd_loss) for o in fitness(genomes)]))
    assert results[0] == results[1]


def test_the_shipped_task_is_the_staged_task_on_the_cpu(tiny_fitness):
    """What a worker gets: the StagedTask's own fields, nothing found by reflection, and the same tensors."""
    import dataclasses
    import pickle

    import torch

    task = tiny_fitness.task
    shipped = pickle.loads(pickle.dumps(task.cpu()))
    assert [f.name for f in dataclasses.fields(shipped)] == [f.name for f in dataclasses.fields(task)]
    assert set(vars(shipped)) == {f.name for f in dataclasses.fields(task)}  # no attribute beyond the fields
    for a, b in zip(task.tensors(), shipped.tensors()):
        assert b.device.type == "cpu" and torch.equal(a.cpu(), b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        shipped.extra = 1  # a new attribute cannot ride along silently


@pytest.mark.parametrize("kind", ["sequential", "batched"])
def test_a_fine_tune_that_ends_below_its_start_is_caught(tiny_overrides, kind):
    # A learning rate that wrecks the subnet; clipped gradients keep the loss finite.
    wreck = ["fitness.lr=20", "fitness.momentum=0", "fitness.grad_clip=5", "fitness.steps=6", "fitness.adaptive_bn=4",
             f"evaluator.kind={kind}", "fitness.device=cpu"]
    fitness = build_fitness(load_config(overrides=tiny_overrides + wreck), progress=False)
    assert fitness.evaluator.kind == kind
    o = fitness([fitness.space.uniform(0.75)])[0]
    assert o.status == "regressed" and o.valid
    assert o.accuracy == o.accuracy_after < o.accuracy_before  # both scores kept; the one after counts
    assert o.accuracy_before > 0.5  # the recalibrated subnet of a trained parent, before the wreck


def test_a_fine_tune_that_helps_keeps_its_score(tiny_overrides):
    fitness = build_fitness(load_config(overrides=tiny_overrides + ["fitness.adaptive_bn=4"]), progress=False)
    for o in fitness([fitness.space.uniform(0.5), fitness.space.uniform(0.25)]):
        assert o.accuracy_before is not None and o.accuracy_after is not None
        assert o.accuracy == o.accuracy_after
        assert o.status == ("regressed" if o.accuracy_after < o.accuracy_before else "ok")


def test_no_regression_check_without_fine_tune_or_recalibration(tiny_overrides):
    for extra in (["fitness.steps=0"], ["fitness.adaptive_bn=0"], ["fitness.regression_check=false"]):
        fitness = build_fitness(load_config(overrides=tiny_overrides + extra), progress=False)
        o = fitness([fitness.space.uniform(0.5)])[0]
        assert o.status == "ok" and o.accuracy_before is None
