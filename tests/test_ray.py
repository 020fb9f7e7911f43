"""Ray backend: the same front as the local evaluator, and a worker that dies mid-generation loses nothing."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest

ray = pytest.importorskip("ray")

from evoprune import ConfigError, build_fitness, load_config  # noqa: E402
from evoprune.fitness.evaluators import RayEvaluator  # noqa: E402
from evoprune.fitness.evaluators.ray import CRASH_ENV  # noqa: E402
from evoprune.run.search import RunDirSearch  # noqa: E402

RAY = ["evaluator.backend=ray", "evaluator.workers=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance with 2 CPUs for the module (started once: ~5 s)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield
    ray.shutdown()


def _search(overrides: list[str], run_dir) -> dict:
    fitness = build_fitness(load_config(overrides=overrides), run_dir, progress=False)
    try:
        RunDirSearch(fitness, run_dir, progress=False, log=lambda line: None).run()
    finally:
        if isinstance(fitness.evaluator, RayEvaluator):
            stats = {"failures": fitness.evaluator.failures, "restarts": fitness.evaluator.restarts}
            fitness.evaluator.close()
        else:
            stats = {}
    return stats


def _front(run_dir) -> list:
    return json.loads((run_dir / "front.json").read_text())["front"]


def _evaluations(run_dir) -> list[dict]:
    """evaluations.csv without the wall-clock column."""
    with open(run_dir / "evaluations.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from conftest import TINY

    run_dir = tmp_path_factory.mktemp("local")
    _search(list(TINY), run_dir)
    return run_dir


@pytest.mark.slow
def test_ray_search_gives_the_same_front_as_the_local_evaluator(local_run, tiny_overrides, tmp_path):
    stats = _search(tiny_overrides + RAY, tmp_path)
    assert stats == {"failures": 0, "restarts": 0}
    assert _front(tmp_path) == _front(local_run)  # bitwise: one torch thread per individual both ways
    assert _evaluations(tmp_path) == _evaluations(local_run)
    task = json.loads((tmp_path / "task.json").read_text())
    assert task["evaluator"]["backend"] == "ray" and task["evaluator"]["workers"] == 2
    assert task["evaluator"]["kind"] == "sequential"  # what the workers ran, as a local run records it


@pytest.mark.slow
def test_a_worker_dying_mid_chunk_loses_nothing_and_counts_nothing_twice(local_run, tiny_overrides, tmp_path,
                                                                        monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))  # the first worker to finish a chunk os._exit()s instead of replying
    stats = _search(tiny_overrides + RAY, tmp_path / "run")
    assert marker.exists() and stats["failures"] == 1 and stats["restarts"] == 1
    rows = _evaluations(tmp_path / "run")
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))  # every genome evaluated and recorded exactly once
    assert rows == _evaluations(local_run)
    assert _front(tmp_path / "run") == _front(local_run)


def test_a_killed_worker_is_replaced_and_its_genomes_evaluated(tiny_fitness, tiny_overrides):
    from evoprune.evolve.population import initial_population
    import random

    genomes = [g for g, _ in initial_population(tiny_fitness.space, tiny_fitness.cfg.population, 6,
                                                random.Random(3))]
    expected = tiny_fitness(genomes)
    fitness = build_fitness(load_config(overrides=tiny_overrides + RAY), progress=False)
    evaluator = fitness.evaluator
    try:
        ray.kill(evaluator.ready[0], no_restart=True)  # dead before its first chunk
        done = []
        got = fitness(genomes, on_done=done.append)
        assert got == [dataclasses.replace(o, seconds=g.seconds) for o, g in zip(expected, got)]
        assert sum(done) == len(genomes) and evaluator.failures >= 1 and evaluator.restarts >= 1
    finally:
        evaluator.close()


def test_an_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="evaluator.backend"):
        load_config(overrides=["evaluator.backend=spark"])


def test_the_parent_travels_as_a_state_dict_or_whole_when_the_config_cannot_build_it(tiny_fitness, tiny_overrides):
    import torch

    from evoprune.fitness.evaluators.ray import parent_payload, parent_from_payload

    parent, task = tiny_fitness.parent, tiny_fitness.task
    shape = tuple(task.example_input.shape[1:])
    cfg = load_config(overrides=tiny_overrides)
    payload = parent_payload(parent, shape, task.n_classes, cfg.parent)
    assert "state_dict" in payload and "module" not in payload
    assert payload["config"].parent.pretrained == "none"  # the weights are in the state_dict: never a download
    rebuilt = parent_from_payload(payload)
    for (name, a), (_, b) in zip(parent.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a.cpu(), b), name
    other = load_config(overrides=tiny_overrides + ["parent.width=16"])  # builds another shape
    for parent_config in (other.parent, None):  # or no config to build it with at all
        payload = parent_payload(parent, shape, task.n_classes, parent_config)
        assert "module" in payload and payload["module"] is not parent
        assert parent_from_payload(payload).state_dict().keys() == parent.state_dict().keys()

