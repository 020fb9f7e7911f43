"""Fitness: genomes (or any model) in, Objectives out; the staged task, fine-tune recipe, KD losses, evaluators."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "facade": ("Fitness", "build_fitness"),
    "precision": ("resolve_device",),
    "staged": ("StagedTask",),
    "evaluators.protocol": ("Evaluator",),
})
