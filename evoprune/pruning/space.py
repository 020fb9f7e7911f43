"""SearchSpace: the parent's prunable groups, their floors and importance rankings (plain data)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from evoprune.genome import Genome


@dataclass(frozen=True)
class GroupSpec:
    """One torch-pruning group: channels removed together from every coupled module.

    `channel_groups` (G) is the number of conv groups its grouped convs split the channels into. For
    G > 1 a kept set must be periodic: the same within-group positions in each of the G blocks of
    `period` channels, since torch-pruning slices a grouped conv's weight as if it were.
    """

    name: str  # the root module's name in the parent
    n_channels: int
    floor: int  # least channels that may be kept (already a legal count)
    round_to: int
    modules: tuple[str, ...] = ()
    channel_groups: int = 1

    def __post_init__(self) -> None:
        if self.channel_groups < 1 or self.n_channels % self.channel_groups:
            raise ValueError(f"group {self.name}: channel_groups {self.channel_groups} must be a positive divisor "
                             f"of its {self.n_channels} channels")

    @property
    def step(self) -> int:
        """Kept counts are multiples of this (or the full width): round_to and whole positions."""
        return math.lcm(self.round_to, self.channel_groups)

    @property
    def period(self) -> int:
        """Channels per conv group: position p's copies are p, p + period, p + 2*period, ..."""
        return self.n_channels // self.channel_groups

    def legal(self, count: int) -> bool:
        """Whether keeping `count` channels is allowed (floor, full width, multiples of the step)."""
        return self.floor <= count <= self.n_channels and (count % self.step == 0 or count == self.n_channels)

    def nearest_legal(self, count: int) -> int:
        """The legal kept count closest to `count` (ties go to the larger)."""
        count = min(max(count, self.floor), self.n_channels)
        if self.legal(count):
            return count
        step = self.step
        down = count - count % step
        up = min(down + step, self.n_channels)
        if down < self.floor:
            return up
        return up if (up - count) <= (count - down) else down

    def copies(self, positions: Iterable[int]) -> list[int]:
        """The channels at these within-group positions in every conv group, position by position."""
        return [p + i * self.period for p in positions for i in range(self.channel_groups)]

    def positions(self, channels: Iterable[int]) -> list[int]:
        """Within-group positions in the order the channels first reach them (a ranking's position order)."""
        return list(dict.fromkeys(c % self.period for c in channels))

    def periodic(self, kept: Iterable[int]) -> bool:
        """Whether distinct in-range `kept` channels are whole positions (always true for G == 1)."""
        kept = set(kept)
        return self.channel_groups == 1 or len(kept) == len(self.positions(kept)) * self.channel_groups


def group_floor(n_channels: int, min_keep: float, min_channels: int, round_to: int, channel_groups: int = 1) -> int:
    """The per-group floor: at least `min_keep` of the channels and `min_channels`, rounded up to the step."""
    step = math.lcm(round_to, channel_groups)
    floor = max(min_channels, math.ceil(min_keep * n_channels))
    floor = step * math.ceil(floor / step)
    return min(floor, n_channels)


@dataclass
class SearchSpace:
    """Groups in layer order plus, per criterion, each group's channels by descending importance.

    A group with conv groups (G > 1) is ranked by whole positions: each position's G copies listed
    together, so any prefix of G-multiple length is a periodic kept set.
    """

    groups: list[GroupSpec]
    rankings: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {g.name: g for g in self.groups}
        for crit, table in self.rankings.items():
            for g in self.groups:
                rank = table.get(g.name)
                if g.channel_groups > 1 and rank is not None and rank != g.copies(g.positions(rank)):
                    raise ValueError(f"ranking {crit!r} of group {g.name} must list each position's "
                                     f"{g.channel_groups} conv-group copies together")

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
            g = self.group(name)
            return g.copies(range(g.period))
        return table[name]

    def full(self) -> Genome:
        return Genome({g.name: range(g.n_channels) for g in self.groups})

    def top_k(self, name: str, k: int, criterion: str | None = None) -> tuple[int, ...]:
        """The `k` most important channels of a group (whole positions when `k` is a legal count)."""
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
                grouped = f", channel_groups {g.channel_groups}" if g.channel_groups > 1 else ""
                raise ValueError(f"group {g.name}: keeping {len(kept)} of {g.n_channels} channels is not allowed "
                                 f"(floor {g.floor}, round_to {g.round_to}{grouped})")
            if not g.periodic(kept):
                raise ValueError(f"group {g.name}: its grouped convs need the same kept positions in each of their "
                                 f"{g.channel_groups} conv groups of {g.period} channels (kept channel i means "
                                 f"keeping i mod {g.period} + j*{g.period} for every j)")

    def repair(self, genome: Mapping[str, Any], criterion: str | None = None) -> Genome:
        """Bring every group to the nearest legal count, adding/dropping along an importance ranking.

        A group with conv groups keeps whole positions: those with most copies already kept, ties
        broken by the ranking.
        """
        unknown = set(genome) - set(self.names)
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}")
        kept: dict[str, tuple[int, ...]] = {}
        for g in self.groups:
            current = {int(i) for i in genome.get(g.name, range(g.n_channels)) if 0 <= int(i) < g.n_channels}
            target = g.nearest_legal(len(current))
            rank = self.ranking(criterion or "", g.name)
            if g.channel_groups > 1:
                kept[g.name] = self._periodic(g, current, target, rank)
                continue
            if target > len(current):
                extra = [c for c in rank if c not in current][: target - len(current)]
                current.update(extra)
            elif target < len(current):
                drop = [c for c in reversed(rank) if c in current][: len(current) - target]
                current.difference_update(drop)
            kept[g.name] = tuple(sorted(current))
        return Genome(kept)

    @staticmethod
    def _periodic(g: GroupSpec, current: set[int], target: int, rank: list[int]) -> tuple[int, ...]:
        """`target` channels of whole positions, preferring positions with most copies in `current`."""
        order = g.positions(rank)
        listed = set(order)
        order += [p for p in range(g.period) if p not in listed]  # a hand-made ranking may miss some
        copies = {p: 0 for p in order}
        for c in current:
            copies[c % g.period] += 1
        # sorted() is stable: equal copy counts stay in ranking order
        chosen = sorted(order, key=lambda p: -copies[p])[: target // g.channel_groups]
        return tuple(sorted(g.copies(chosen)))

    def keep_ratio(self, genome: Genome) -> float:
        """Share of all group channels kept (a cheap, torch-free proxy of size)."""
        total = sum(g.n_channels for g in self.groups)
        return sum(len(genome[g.name]) for g in self.groups) / max(total, 1)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; `channel_groups` is written only where it is not 1, so spaces of nets
        without grouped convs read exactly as before."""
        groups = []
        for g in self.groups:
            obj = {**asdict(g), "modules": list(g.modules)}
            if g.channel_groups == 1:
                del obj["channel_groups"]
            groups.append(obj)
        return {"groups": groups, "rankings": self.rankings}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SearchSpace":
        groups = [GroupSpec(**{**g, "modules": tuple(g.get("modules", ()))}) for g in obj["groups"]]
        return cls(groups, {c: {n: list(r) for n, r in t.items()} for c, t in obj.get("rankings", {}).items()})
