"""Search: the run directory's front, evaluations and history; determinism, budgets and resume."""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY
from evoprune import Genome, SearchSpace, build_fitness, load_config, load_run
from evoprune.metrics import count_params
from evoprune.parent.files import PARENT_META, PARENT_WEIGHTS
from evoprune.evolve import Search, SearchCallback
from evoprune.run import CheckpointError, RunDirSearch

FRONT_FIELDS = {"genome", "accuracy", "n_params", "macs", "size_ratio"}
X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _cfg(*extra: str):
    return load_config(overrides=TINY + ["search.generations=3", *extra])


def _search(cfg, run_dir: Path, resume: bool = False):
    fitness = build_fitness(cfg, run_dir=run_dir, progress=False)
    return RunDirSearch(fitness, run_dir, progress=False, log=lambda s: None).run(resume=resume)


def _new_dir(tmp_path: Path, name: str, parent_from: Path) -> Path:
    """A fresh run directory holding the cached parent of another run (saves training it again)."""
    d = tmp_path / name
    d.mkdir()
    for f in (PARENT_WEIGHTS, PARENT_META):
        shutil.copy(parent_from / f, d / f)
    return d


def _front(run_dir: Path) -> dict:
    return json.loads((run_dir / "front.json").read_text())


def _rows(run_dir: Path, name: str) -> list[dict[str, str]]:
    with (run_dir / name).open() as fh:
        return list(csv.DictReader(fh))


def _evaluations(run_dir: Path) -> list[dict[str, str]]:
    """evaluations.csv without the wall-time column (the only thing allowed to differ)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in _rows(run_dir, "evaluations.csv")]


def _assert_same_evaluations(run_dir: Path, ref_dir: Path) -> None:
    """Every evaluation equal, in order; kd_loss to float rounding (see test_fitness.py::
    test_objectives_do_not_depend_on_the_evaluator_auto_picks), everything else exactly."""
    got, want = _evaluations(run_dir), _evaluations(ref_dir)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g_kd, w_kd = g.pop("kd_loss"), w.pop("kd_loss")
        assert g == w
        assert (g_kd == w_kd) or float(g_kd) == pytest.approx(float(w_kd), rel=1e-4)


def _dominates(a: dict, b: dict) -> bool:
    better_eq = a["accuracy"] >= b["accuracy"] and a["size_ratio"] <= b["size_ratio"]
    return better_eq and (a["accuracy"] > b["accuracy"] or a["size_ratio"] < b["size_ratio"])


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """One uninterrupted 3-generation run (trains and caches its parent): read-only for the tests."""
    run_dir = tmp_path_factory.mktemp("run_a")
    state = _search(_cfg(), run_dir)
    return run_dir, state


# -- the front ---------------------------------------------------------------------------------

def test_front_json_public_format(run_a):
    run_dir, _ = run_a
    doc = _front(run_dir)
    assert {"parent", "front"} <= set(doc)
    parent = doc["parent"]
    assert set(parent) >= {"accuracy", "n_params", "macs"}
    assert 0.0 <= parent["accuracy"] <= 1.0
    assert isinstance(parent["n_params"], int) and isinstance(parent["macs"], int)
    assert doc["front"], "empty front"
    space = SearchSpace.from_json(json.loads((run_dir / "space.json").read_text()))
    for entry in doc["front"]:
        assert FRONT_FIELDS <= set(entry)
        genome = Genome.from_json(entry["genome"])
        space.validate(genome)
        assert entry.get("key", genome.key()) == genome.key()
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert 0.0 < entry["size_ratio"] <= 1.0
        assert isinstance(entry["n_params"], int) and isinstance(entry["macs"], int)
        assert entry["size_ratio"] == pytest.approx(entry["n_params"] / parent["n_params"])  # size_metric params
    sizes = [e["size_ratio"] for e in doc["front"]]
    assert sizes == sorted(sizes)  # smallest first


def test_front_is_non_dominated(run_a):
    front = _front(run_a[0])["front"]
    for a in front:
        for b in front:
            assert not _dominates(a, b), (a["key"], b["key"])
    points = [(e["accuracy"], e["size_ratio"]) for e in front]
    assert len(set(points)) == len(points)  # one member per point


def test_front_members_are_evaluations_and_the_whole_front(run_a):
    run_dir, state = run_a
    front = _front(run_dir)["front"]
    rows = _rows(run_dir, "evaluations.csv")
    by_key = {r["key"]: r for r in rows}
    assert len(by_key) == len(rows)  # no genome evaluated twice
    for e in front:
        row = by_key[Genome.from_json(e["genome"]).key()]
        assert float(row["accuracy"]) == e["accuracy"]
        assert int(row["n_params"]) == e["n_params"]
        assert int(row["macs"]) == e["macs"]
        assert float(row["size_ratio"]) == e["size_ratio"]
    # nothing evaluated dominates a front member, and every non-dominated evaluation is on the front
    evals = [{"accuracy": float(r["accuracy"]), "size_ratio": float(r["size_ratio"])}
             for r in rows if r["status"] == "ok"]
    points = {(e["accuracy"], e["size_ratio"]) for e in front}
    for ev in evals:
        assert not any(_dominates(ev, e) for e in front)
        assert (ev["accuracy"], ev["size_ratio"]) in points or any(_dominates(e, ev) for e in front)
    assert len(rows) == len(state.records)


def test_load_run_subnets_match_the_front(run_a):
    run_dir, _ = run_a
    run = load_run(run_dir)
    front = _front(run_dir)["front"]
    assert len(run.front) == len(front)
    assert run.parent_summary == _front(run_dir)["parent"]
    assert count_params(run.parent()) == run.parent_summary["n_params"]
    for i, entry in enumerate(front):
        sub = run.subnet(i)
        assert count_params(sub) == entry["n_params"]
        assert run.genome(i) == Genome.from_json(entry["genome"])
        with torch.no_grad():
            assert sub(X).shape == (2, 10)
    with pytest.raises(IndexError):
        run.genome(len(front))


def test_history_one_row_per_generation(run_a):
    run_dir, state = run_a
    history = _rows(run_dir, "history.csv")
    assert [int(r["generation"]) for r in history] == [0, 1, 2, 3]
    evals = [int(r["evaluations"]) for r in history]
    assert evals == sorted(evals)
    assert evals[-1] == len(_rows(run_dir, "evaluations.csv"))
    assert sum(int(r["new_evaluations"]) for r in history) == evals[-1]
    assert int(history[0]["new_evaluations"]) == 6  # the initial population
    hv = [float(r["hypervolume"]) for r in history]
    assert all(b >= a for a, b in zip(hv, hv[1:])), hv
    assert hv[-1] > 0
    assert int(history[-1]["front_size"]) == len(_front(run_dir)["front"])
    best = [float(r["best_accuracy"]) for r in history]
    assert all(b >= a for a, b in zip(best, best[1:]))


def test_hypervolume_matches_the_front(run_a):
    """The last hypervolume is the area the front dominates in [0, acc] x [size, 1]."""
    run_dir, _ = run_a
    pts = sorted((e["size_ratio"], e["accuracy"]) for e in _front(run_dir)["front"]
                 if e["size_ratio"] < 1.0 and e["accuracy"] > 0.0)
    area = sum((nxt - size) * acc for (size, acc), nxt in zip(pts, [p[0] for p in pts[1:]] + [1.0]))
    assert float(_rows(run_dir, "history.csv")[-1]["hypervolume"]) == pytest.approx(area, rel=1e-9)


def test_run_directory_contents(run_a):
    run_dir, _ = run_a
    for name in ("config.yaml", "task.json", "space.json", "evaluations.csv", "history.csv", "front.json",
                 "checkpoint.json", PARENT_WEIGHTS):
        assert (run_dir / name).is_file(), name
    assert load_config(run_dir / "config.yaml") == _cfg()


# -- determinism and resume --------------------------------------------------------------------

def test_same_seed_same_front(run_a, tmp_path):
    run_dir, _ = run_a
    other = _new_dir(tmp_path, "again", run_dir)
    _search(_cfg(), other)
    assert _front(other) == _front(run_dir)
    _assert_same_evaluations(other, run_dir)



class _Recorder(SearchCallback):
    """A callback that notes what the search reported, in order."""

    def __init__(self):
        self.events = []

    def on_start(self, state, fitness):
        self.events.append(("start", state.generation))

    def on_generation(self, state, fitness):
        self.events.append(("generation", state.generation))

    def on_finish(self, state, fitness):
        self.events.append(("finish", state.generation))


def test_a_search_without_a_run_directory_returns_the_same_state_and_writes_nothing(run_a, tmp_path):
    run_dir, state_a = run_a
    d = _new_dir(tmp_path, "parent_only", run_dir)  # only to reuse the cached parent
    before = sorted(p.name for p in d.iterdir())
    recorder = _Recorder()
    state = Search(build_fitness(_cfg(), run_dir=d, progress=False), [recorder], progress=False,
                   log=lambda s: None).run()
    assert sorted(p.name for p in d.iterdir()) == before
    def scored(records):  # all but the timing
        return [(r.genome.key(), r.generation, r.origin, r.objectives.accuracy, r.objectives.size_ratio)
                for r in records]
    assert scored(state.records) == scored(state_a.records)
    assert [r.genome.key() for r in state.front()] == [m["key"] for m in _front(run_dir)["front"]]
    assert recorder.events == [("start", -1), ("generation", 0), ("generation", 1), ("generation", 2),
                               ("generation", 3), ("finish", 3)]


def test_search_takes_callbacks_not_a_run_directory(run_a, tmp_path):
    fitness = build_fitness(_cfg(), run_dir=_new_dir(tmp_path, "p", run_a[0]), progress=False)
    with pytest.raises(TypeError, match="RunDirSearch"):
        Search(fitness, tmp_path)


def test_searches_with_their_own_settings_share_one_fitness(run_a, tmp_path):
    run_dir, state_a = run_a
    fitness = build_fitness(_cfg(), run_dir=_new_dir(tmp_path, "p2", run_dir), progress=False)
    before = fitness.cfg
    small = dataclasses.replace(fitness.cfg.search, max_evaluations=10, generations=100)
    state = Search(fitness, progress=False, log=lambda s: None, search=small).run()
    assert len(state.records) == 10 and fitness.cfg is before  # the budget is the search's own
    # the same search settings as the run's give the run's evaluations (the fitness cache is shared)
    again = Search(fitness, progress=False, log=lambda s: None, search=fitness.cfg.search).run()
    assert [r.genome.key() for r in again.records] == [r.genome.key() for r in state_a.records]

class _Interrupt:
    """Evaluator wrapper: raises `exc` at the `nth` evaluation of the `call`-th evaluator call."""

    def __init__(self, fitness, call: int, nth: int, exc: BaseException):
        self.original, self.call, self.nth, self.exc = fitness.evaluator.evaluate, call, nth, exc
        self.calls = 0
        fitness.evaluator.evaluate = self

    def __call__(self, genomes, on_done=None):
        self.calls += 1
        if self.calls < self.call:
            return self.original(genomes, on_done)
        out = []
        for i, g in enumerate(genomes):
            if i + 1 == self.nth:
                raise self.exc
            out += self.original([g], on_done)
        return out


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("evaluation crashed")],
                         ids=["ctrl-c", "crash"])
def test_resume_after_interruption_reproduces_the_front(run_a, tmp_path, exc):
    run_dir, _ = run_a
    b = _new_dir(tmp_path, "b", run_dir)
    fitness = build_fitness(_cfg(), run_dir=b, progress=False)
    _Interrupt(fitness, call=3, nth=3, exc=exc)  # the 3rd evaluation of generation 2
    with pytest.raises(type(exc)):
        RunDirSearch(fitness, b, progress=False, log=lambda s: None).run()
    ckpt = json.loads((b / "checkpoint.json").read_text())
    assert ckpt["generation"] == 1
    assert [int(r["generation"]) for r in _rows(b, "history.csv")] == [0, 1]
    # a fresh process: new fitness, resume from the run directory
    state = _search(_cfg(), b, resume=True)
    assert state.generation == 3
    assert _front(b) == _front(run_dir)
    _assert_same_evaluations(b, run_dir)
    hist = lambda d: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _rows(d, "history.csv")]  # noqa: E731
    assert hist(b) == hist(run_dir)


def test_resume_extends_a_finished_run(run_a, tmp_path):
    """Finishing 2 generations, then resuming with 3, equals running 3 generations at once."""
    run_dir, _ = run_a
    c = _new_dir(tmp_path, "c", run_dir)
    _search(_cfg("search.generations=2"), c)
    assert len(_rows(c, "history.csv")) == 3
    # resuming a finished run with its own budget evaluates nothing more
    n_evals = len(_rows(c, "evaluations.csv"))
    _search(_cfg("search.generations=2"), c, resume=True)
    assert len(_rows(c, "evaluations.csv")) == n_evals
    _search(_cfg("search.generations=3"), c, resume=True)
    assert _front(c) == _front(run_dir)
    _assert_same_evaluations(c, run_dir)


# -- budgets and modes -------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [4, 10])
def test_max_evaluations_budget(run_a, tmp_path, budget):
    run_dir, _ = run_a
    d = _new_dir(tmp_path, "budget", run_dir)
    state = _search(_cfg(f"search.max_evaluations={budget}"), d)
    rows = _rows(d, "evaluations.csv")
    assert len(rows) == len(state.records) == budget
    history = _rows(d, "history.csv")
    assert int(history[-1]["evaluations"]) == budget
    assert len(history) == (1 if budget <= 6 else 2)  # stops as soon as the budget is spent
    front = _front(d)["front"]
    assert front and all(Genome.from_json(e["genome"]).key() in {r["key"] for r in rows} for e in front)


def test_scalar_mode(run_a, tmp_path):
    run_dir, _ = run_a
    d = _new_dir(tmp_path, "scalar", run_dir)
    cfg = _cfg("search.mode=scalar")
    state = _search(cfg, d)
    assert state.generation == 3
    doc = _front(d)
    assert doc["front"] and FRONT_FIELDS <= set(doc["front"][0])
    for a in doc["front"]:
        assert not any(_dominates(b, a) for b in doc["front"])
    assert [int(r["generation"]) for r in _rows(d, "history.csv")] == [0, 1, 2, 3]
    # the scalar GA keeps the best accuracy - lambda * size individuals: its best never gets worse
    lam = cfg.search.scalar_lambda
    score = lambda r: r.objectives.accuracy - lam * r.objectives.size_ratio  # noqa: E731
    best_by_gen = [max(score(r) for r in state.records if r.generation <= g) for g in range(4)]
    assert best_by_gen == sorted(best_by_gen)
    pop = {k for k in state.population}
    best = max(state.records, key=score)
    assert best.genome.key() in pop  # truncation selection never loses the best


# -- run directory hygiene and edge cases ------------------------------------------------------

def test_resume_without_a_checkpoint_fails_clearly(run_a, tmp_path):
    d = _new_dir(tmp_path, "empty", run_a[0])
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        _search(_cfg(), d, resume=True)
    # interrupted before the first generation finished: nothing to resume either, a fresh run works
    fitness = build_fitness(_cfg(), run_dir=d, progress=False)
    _Interrupt(fitness, call=1, nth=2, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        RunDirSearch(fitness, d, progress=False, log=lambda s: None).run()
    with pytest.raises(CheckpointError):
        _search(_cfg(), d, resume=True)
    _search(_cfg("search.max_evaluations=6"), d)
    assert len(_rows(d, "evaluations.csv")) == 6


def test_fresh_run_in_an_old_run_directory_replaces_its_outputs(run_a, tmp_path):
    d = tmp_path / "reused"
    shutil.copytree(run_a[0], d)
    _search(_cfg("search.max_evaluations=4"), d)
    assert len(_rows(d, "evaluations.csv")) == 4
    assert [int(r["generation"]) for r in _rows(d, "history.csv")] == [0]
    keys = {r["key"] for r in _rows(d, "evaluations.csv")}
    assert all(e["key"] in keys for e in _front(d)["front"])
    assert json.loads((d / "checkpoint.json").read_text())["generation"] == 0
    assert load_run(d).config.search.max_evaluations == 4


def test_search_in_a_space_with_one_genome(run_a, tmp_path):
    d = _new_dir(tmp_path, "one", run_a[0])
    _search(_cfg("space.min_keep=1.0"), d)
    front = _front(d)["front"]
    assert len(front) == 1 and front[0]["size_ratio"] == 1.0


def test_a_hypervolume_plateau_stops_the_search_and_a_resume_stops_there_too(run_a, tmp_path):
    run_dir, _ = run_a
    plateau = ["search.generations=8", "search.patience=1", "search.min_gain=1.0"]  # no generation gains 1.0
    d = _new_dir(tmp_path, "plateau", run_dir)
    state = _search(_cfg(*plateau), d)
    assert state.generation == 1  # generation 1 gained less than 1.0 over generation 0
    assert _rows(d, "history.csv")[-1]["generation"] == "1"
    _search(_cfg(*plateau), d, resume=True)  # resuming a plateaued run evaluates nothing more
    assert len(_rows(d, "history.csv")) == 2
    state = _search(_cfg("search.generations=8", "search.patience=0"), d, resume=True)  # patience off: runs on
    assert state.generation == 8


def test_the_plateau_is_judged_on_the_best_scalar_fitness_in_scalar_mode(run_a, tmp_path):
    d = _new_dir(tmp_path, "scalar_plateau", run_a[0])
    state = _search(_cfg("search.mode=scalar", "search.generations=8", "search.patience=2", "search.min_gain=1.0"), d)
    assert state.generation == 2


def test_the_run_counts_fine_tunes_that_regressed(tmp_path):
    from conftest import run_cli

    wreck = ["fitness.lr=20", "fitness.momentum=0", "fitness.grad_clip=5", "fitness.adaptive_bn=4"]
    rc, out, err = run_cli(["search", "--out", tmp_path, "--quiet", *[f"--set={o}" for o in TINY + wreck]])
    assert rc == 0, err
    rows = _rows(tmp_path, "evaluations.csv")
    regressed = [r for r in rows if r["status"] == "regressed"]
    assert regressed and all(float(r["accuracy"]) == float(r["accuracy_after"]) < float(r["accuracy_before"])
                             for r in regressed)
    assert int(_rows(tmp_path, "history.csv")[-1]["regressed"]) == len(regressed)
    assert f"{len(regressed)} of {len(rows)} fine-tunes ended below" in out
