"""SearchSpace: the parent's prunable groups, their floors and importance rankings (plain data)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from evoprune.genome import Genome


@dataclass(frozen=True)
class GroupSpec:
    """One torch-pruning group: channels removed together from every coupled module."""

    name: str  # the root module's name in the parent
    n_channels: int
    floor: int  # least channels that may be kept (already a legal count)
    round_to: int
    modules: tuple[str, ...] = ()

    def legal(self, count: int) -> bool:
        return self.floor <= count <= self.n_channels and (count % self.round_to == 0 or count == self.n_channels)

    def nearest_legal(self, count: int) -> int:
        """The legal kept count closest to `count` (ties go to the larger)."""
        count = min(max(count, self.floor), self.n_channels)
        if self.legal(count):
            return count
        down = count - count % self.round_to
        up = min(down + self.round_to, self.n_channels)
        if down < self.floor:
            return up
        return up if (up - count) <= (count - down) else down


def group_floor(n_channels: int, min_keep: float, min_channels: int, round_to: int) -> int:
    """The per-group floor: at least `min_keep` of the channels and `min_channels`, rounded up."""
    floor = max(min_channels, math.ceil(min_keep * n_channels))
    floor = round_to * math.ceil(floor / round_to)
    return min(floor, n_channels)


@dataclass
class SearchSpace:
    """Groups in layer order plus, per criterion, each group's channels by descending importance."""

    groups: list[GroupSpec]
    rankings: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {g.name: g for g in self.groups}

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def criteria(self) -> list[str]:
        return list(self.rankings)

    def group(self, name: str) -> GroupSpec:
        return self._by_name[name]

    def ranking(self, criterion: str, name: str) -> list[int]:
        """Channels of a group, most important first; unknown criteria use the first ranking."""
        table = self.rankings.get(criterion) or next(iter(self.rankings.values()), None)
        if table is None:
            return list(range(self.group(name).n_channels))
        return table[name]

    def full(self) -> Genome:
        return Genome({g.name: range(g.n_channels) for g in self.groups})

    def top_k(self, name: str, k: int, criterion: str | None = None) -> tuple[int, ...]:
        return tuple(sorted(self.ranking(criterion or "", name)[:k]))

    def uniform(self, keep: float, criterion: str | None = None) -> Genome:
        """Keep the same share of every group (its most important channels), repaired to floors."""
        return self.from_keep_ratios([keep] * len(self.groups), criterion)

    def from_keep_ratios(self, keep: Mapping[str, float] | list[float], criterion: str | None = None) -> Genome:
        """A genome from per-group kept shares (by name, or a list in layer order): the handle for
        continuous optimisers (Optuna, pymoo). Each group keeps its most important channels."""
        shares = keep if isinstance(keep, Mapping) else dict(zip(self.names, keep))
        if set(shares) != set(self.names):
            raise ValueError(f"expected a keep share for each of the {len(self.groups)} groups {self.names}")
        kept = {}
        for g in self.groups:
            share = float(shares[g.name])
            if not 0.0 < share <= 1.0:
                raise ValueError(f"keep share of group {g.name} must be in (0, 1], got {share}")
            kept[g.name] = self.top_k(g.name, g.nearest_legal(max(1, round(share * g.n_channels))), criterion)
        return Genome(kept)

    def validate(self, genome: Genome) -> None:
        """Raise ValueError unless the genome names exactly this space's groups with legal kept sets."""
        unknown = set(genome) - set(self.names)
        missing = set(self.names) - set(genome)
        if unknown or missing:
            raise ValueError(f"genome does not match the search space (unknown groups: {sorted(unknown)}, "
                             f"missing groups: {sorted(missing)})")
        for g in self.groups:
            kept = genome[g.name]
            if len(set(kept)) != len(kept) or any(not 0 <= i < g.n_channels for i in kept):
                raise ValueError(f"group {g.name}: kept indices must be distinct and in [0, {g.n_channels})")
            if not g.legal(len(kept)):
                raise ValueError(f"group {g.name}: keeping {len(kept)} of {g.n_channels} channels is not allowed "
                                 f"(floor {g.floor}, round_to {g.round_to})")

    def repair(self, genome: Mapping[str, Any], criterion: str | None = None) -> Genome:
        """Bring every group to the nearest legal count, adding/dropping along an importance ranking."""
        unknown = set(genome) - set(self.names)
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}")
        kept: dict[str, tuple[int, ...]] = {}
        for g in self.groups:
            current = {int(i) for i in genome.get(g.name, range(g.n_channels)) if 0 <= int(i) < g.n_channels}
            target = g.nearest_legal(len(current))
            rank = self.ranking(criterion or "", g.name)
            if target > len(current):
                extra = [c for c in rank if c not in current][: target - len(current)]
                current.update(extra)
            elif target < len(current):
                drop = [c for c in reversed(rank) if c in current][: len(current) - target]
                current.difference_update(drop)
            kept[g.name] = tuple(sorted(current))
        return Genome(kept)

    def keep_ratio(self, genome: Genome) -> float:
        """Share of all group channels kept (a cheap, torch-free proxy of size)."""
        total = sum(g.n_channels for g in self.groups)
        return sum(len(genome[g.name]) for g in self.groups) / max(total, 1)

    def to_json(self) -> dict[str, Any]:
        return {"groups": [{**asdict(g), "modules": list(g.modules)} for g in self.groups],
                "rankings": self.rankings}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SearchSpace":
        groups = [GroupSpec(**{**g, "modules": tuple(g.get("modules", ()))}) for g in obj["groups"]]
        return cls(groups, {c: {n: list(r) for n, r in t.items()} for c, t in obj.get("rankings", {}).items()})
