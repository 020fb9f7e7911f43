"""Evaluators: how a population's fine-tunes run (sequential structural; batched comes later)."""
from .sequential import SequentialEvaluator

__all__ = ["SequentialEvaluator"]
