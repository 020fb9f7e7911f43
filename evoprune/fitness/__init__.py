"""Fitness: genomes (or any model) in, Objectives out; the staged task, fine-tune recipe, KD losses, evaluators."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "Fitness": "facade",
    "build_fitness": "facade",
    "resolve_device": "precision",
    "StagedTask": "staged",
    "Evaluator": "evaluators.protocol",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
