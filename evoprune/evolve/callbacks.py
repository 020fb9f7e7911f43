"""What a search reports to while it runs: the SearchCallback protocol (a run directory's writer is one)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evoprune.evolve.state import SearchState
    from evoprune.fitness.facade import Fitness


class SearchCallback:
    """Hooks `Search.run` calls on each of its callbacks, in order; each does nothing unless overridden.

    A callback may stop the search by raising (e.g. KeyboardInterrupt); what it saved stays saved.
    """

    def on_start(self, state: "SearchState", fitness: "Fitness") -> None:
        """The search begins: `state` is empty (generation -1) for a fresh search, or the restored
        state of a resumed one (its last completed generation)."""

    def on_generation(self, state: "SearchState", fitness: "Fitness") -> None:
        """A generation was evaluated and selected: `state` holds it, ready to be continued from."""

    def on_finish(self, state: "SearchState", fitness: "Fitness") -> None:
        """The budget is spent or the search plateaued: `state` is final."""
