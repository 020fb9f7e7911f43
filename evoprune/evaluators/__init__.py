"""Evaluators: how a population's fine-tunes run (sequential structural, or batched masked)."""
from .batched import BatchedEvaluator, Unsupported
from .choose import choose_evaluator
from .sequential import SequentialEvaluator

__all__ = ["BatchedEvaluator", "SequentialEvaluator", "Unsupported", "choose_evaluator"]
