"""Shared fixtures: a tiny config and a tiny fitness (digits, a width-8 parent, a few steps)."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

# Tiny models gain nothing from a second thread, and a loaded machine makes two threads much
# slower; one thread also keeps float rounding identical for the whole session.
torch.set_num_threads(1)

from evoprune import build_fitness, load_config

# Small enough that a whole search runs in seconds on 2 CPU cores.
TINY = [
    "parent.width=8", "parent.epochs=3",
    "search.population=6", "search.offspring=6", "search.generations=2",
    "fitness.steps=3", "fitness.batch_size=32", "fitness.finetune_samples=128", "fitness.val_samples=128",
    "search.patience=0",  # budgets in tests are exact generation counts; the plateau stop has its own tests
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="session")
def tiny_fitness():
    """One fitness for read-only use across tests (do not mutate its config)."""
    return build_fitness(load_config(overrides=TINY), run_dir=None, progress=False)


def run_cli(argv: list) -> tuple[int, str, str]:
    """Run `python -m evoprune ARGV` in-process: (exit code, stdout, stderr)."""
    from evoprune.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny search's run directory (one per test module)."""
    run = tmp_path_factory.mktemp("run")
    rc, _, err = run_cli(["search", "--out", run, "--quiet", *[f"--set={o}" for o in TINY]])
    assert rc == 0, err
    return run
