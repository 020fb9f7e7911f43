"""A search that keeps its run directory: the evolve/ loop with the RunWriter as its first callback."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from evoprune.evolve.callbacks import SearchCallback
from evoprune.evolve.loop import Search
from evoprune.evolve.state import SearchState
from evoprune.run.writer import RunWriter

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness


class RunDirSearch:
    """`Search` writing `run_dir` after every generation (checkpoint, tables, front; plots at the end),
    and continuing from that directory's checkpoint with `run(resume=True)`."""

    def __init__(self, fitness: "Fitness", run_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] | None = None, callbacks: Sequence[SearchCallback] = ()):
        self.writer = RunWriter(run_dir)
        self.search = Search(fitness, [self.writer, *callbacks], progress=progress, log=log)

    def run(self, resume: bool = False) -> SearchState:
        """Run the search from its beginning, or continue it from the run directory's newest usable
        checkpoint (CheckpointError when there is none)."""
        return self.search.run(resume_from=self.writer.read_checkpoint() if resume else None)
