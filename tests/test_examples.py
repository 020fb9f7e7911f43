"""The README's Optuna and pymoo examples run against a tiny parent."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_optuna_multi_objective_study(tiny_fitness):
    pytest.importorskip("optuna")
    study = _load("optuna_search").run_study(tiny_fitness, n_trials=4)
    assert len(study.trials) == 4 and study.best_trials
    for t in study.best_trials:
        assert 0.0 <= t.values[0] <= 1.0 and 0.0 < t.values[1] <= 1.0


def test_pymoo_problem(tiny_fitness):
    pytest.importorskip("pymoo")
    res = _load("pymoo_search").run(tiny_fitness, pop_size=4, generations=2)
    assert res.F.shape[1] == 2 and (res.F[:, 0] <= 0).all() and (res.F[:, 1] <= 1.0).all()
