"""Evaluators: how a population's fine-tunes run (sequential structural, batched masked; on Ray workers)."""
from .batched import BatchedEvaluator, Unsupported
from .choose import choose_evaluator
from .ray_backend import RayEvaluator  # imports Ray only when one is made
from .sequential import SequentialEvaluator

__all__ = ["BatchedEvaluator", "RayEvaluator", "SequentialEvaluator", "Unsupported", "choose_evaluator"]
