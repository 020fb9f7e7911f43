"""evoprune: compress neural networks by evolutionary search over structurally pruned subnets."""
from __future__ import annotations

import os
import sys

from evoprune.cpu_load import choose_wait_policy
from evoprune.lazy import lazy_exports

__version__ = "0.1.0"

# OpenMP's waiting threads spin, which is fastest on an idle machine and can be 5-10x slower on a busy
# one; libgomp reads its policy once, when torch loads it, so it is chosen here, before evoprune
# imports torch (see cpu_load.py; a policy the user set wins).
if "torch" not in sys.modules:
    choose_wait_policy(os.environ)

# The public names, imported on first use: `python -m evoprune --help` and `config` need no torch.
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("Config", "ConfigError", "load_config"),
    "fitness": ("Fitness", "build_fitness"),
    "genome": ("Genome",),
    "objectives": ("Objectives",),
    "run": ("Run", "load_run"),
    "run.python_search": ("search",),
    "pruning": ("SearchSpace",),
})
