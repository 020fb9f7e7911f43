"""Evaluators: how a population's fine-tunes run (sequential structural, batched masked; on Ray workers)."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "batched": ("BatchedEvaluator", "Unsupported"),
    "choose": ("choose_evaluator",),
    "protocol": ("Evaluator",),
    "ray": ("RayEvaluator",),
    "sequential": ("SequentialEvaluator",),
})
