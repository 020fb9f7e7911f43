"""evoprune: compress neural networks by evolutionary search over structurally pruned subnets."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .load import choose_wait_policy

__version__ = "0.1.0"

# OpenMP's waiting threads spin, which is fastest on an idle machine and can be 5-10x slower on a busy
# one; libgomp reads its policy once, when torch loads it, so it is chosen here, before evoprune
# imports torch (see load.py; a policy the user set wins).
if "torch" not in sys.modules:
    choose_wait_policy(os.environ)

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
