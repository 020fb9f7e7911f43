"""The search's state: evaluated individuals (Record), SearchState and the RNG, to and from JSON."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from evoprune.evolve.pareto import front_indices
from evoprune.genome import Genome
from evoprune.objectives import Objectives


@dataclass
class Record:
    """One evaluated individual: where it came from and what it scored."""

    index: int
    generation: int
    genome: Genome
    origin: str  # the importance criteria it descends from, '+'-joined
    objectives: Objectives

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "generation": self.generation, "key": self.genome.key(),
                "origin": self.origin, "genome": self.genome.to_json(), "objectives": self.objectives.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Record":
        return cls(obj["index"], obj["generation"], Genome.from_json(obj["genome"]), obj["origin"],
                   Objectives.from_json(obj["objectives"]))


@dataclass
class SearchState:
    """Everything needed to continue a search (a run directory keeps it as its checkpoint)."""

    generation: int = -1  # last completed generation (-1: none yet)
    records: list[Record] = field(default_factory=list)
    population: list[str] = field(default_factory=list)  # genome keys, in selection order
    crowding: list[float] = field(default_factory=list)  # NSGA-II crowding distance per member
    history: list[dict[str, Any]] = field(default_factory=list)
    rng_state: Any = None
    elapsed: float = 0.0

    def front(self) -> list[Record]:
        """The non-dominated evaluated individuals, smallest first (one of each set of equal points)."""
        return [self.records[i] for i in front_indices([r.objectives for r in self.records])]

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "records": [r.to_json() for r in self.records],
                "population": self.population, "crowding": self.crowding, "history": self.history,
                "rng_state": self.rng_state, "elapsed": self.elapsed}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "SearchState":
        return cls(obj["generation"], [Record.from_json(r) for r in obj["records"]], list(obj["population"]),
                   [float(c) for c in obj["crowding"]], list(obj["history"]), obj["rng_state"],
                   float(obj.get("elapsed", 0.0)))

    def check_consistent(self) -> None:
        """ValueError unless a search can continue from this state: its RNG state restores, its
        population names evaluated genomes, one crowding distance per member."""
        rng_from_json(self.rng_state)
        keys = {r.genome.key() for r in self.records}
        if any(k not in keys for k in self.population):
            raise ValueError("the population names a genome that is not among the records")
        if len(self.crowding) != len(self.population):
            raise ValueError("crowding does not match the population")


def rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(obj: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((obj[0], tuple(obj[1]), obj[2]))
    return rng
