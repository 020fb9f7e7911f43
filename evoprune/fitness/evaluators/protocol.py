"""Evaluator: what every evaluator offers (a population's genomes in, their Objectives out)."""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from evoprune.genome import Genome
from evoprune.objectives import Objectives


@runtime_checkable
class Evaluator(Protocol):
    """Built from a StagedTask, the parent, the SearchSpace (where it needs it) and its own settings.

    `kind`: the fine-tune form that produces the objectives (`sequential` or `batched`), which a
    checkpoint records and a resume pins. `evaluate` returns one Objectives per genome, in order, and
    calls `on_done(n)` as n more are finished. `close` releases workers (idempotent).
    """

    kind: str

    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        ...

    def close(self) -> None:
        ...
