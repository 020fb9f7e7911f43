"""Evaluators: how a population's fine-tunes run (sequential structural, batched masked; on Ray workers)."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "BatchedEvaluator": "batched",
    "Unsupported": "batched",
    "choose_evaluator": "choose",
    "Evaluator": "protocol",
    "RayEvaluator": "ray",
    "SequentialEvaluator": "sequential",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
