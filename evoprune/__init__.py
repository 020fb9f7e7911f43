"""evoprune: compress neural networks by evolutionary search over structurally pruned subnets."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"

# OpenMP threads that wait for a peer spin by default, and on a busy machine the OS deschedules that
# peer: one epoch of the digits parent took 26 s with 2 spinning threads at load 5, against 1.5 s with
# passive waiting (results/bench_load.md). libgomp reads this once, when torch loads it, so it is set
# here, before evoprune imports torch; a value the user set wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The public names, imported on first use: `python -m evoprune --help` and `config` need no torch.
_EXPORTS = {"Config": "config", "ConfigError": "config", "load_config": "config", "Fitness": "fitness",
            "build_fitness": "fitness", "Genome": "genome", "Objectives": "objectives", "Run": "run",
            "load_run": "run", "SearchSpace": "space"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evoprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
