"""Variation without torch: layer-swap crossover over groups, grow/shrink/re-draw mutation, repair."""
from __future__ import annotations

from typing import Sequence

import random

from evoprune.config.vocab import CROSSOVERS
from evoprune.genome import Genome
from evoprune.pruning.draw import keep_by_criterion
from evoprune.pruning.space import GroupSpec, SearchSpace


def crossover(a: Genome, b: Genome, space: SearchSpace, kind: str, rng: random.Random) -> tuple[Genome, Genome]:
    """Two children; each group's kept set comes whole from one parent (groups in layer order)."""
    names = space.names
    n = len(names)
    if kind == "uniform":
        take_a = [rng.random() < 0.5 for _ in names]
    elif kind == "one_point":
        cut = rng.randint(1, max(1, n - 1))
        take_a = [i < cut for i in range(n)]
    elif kind == "two_point":
        i, j = sorted(rng.sample(range(n + 1), 2)) if n > 1 else (0, 1)
        take_a = [not (i <= k < j) for k in range(n)]
    else:
        raise ValueError(f"unknown crossover {kind!r}; known: {', '.join(CROSSOVERS)}")
    c1 = {nm: (a if t else b)[nm] for nm, t in zip(names, take_a)}
    c2 = {nm: (b if t else a)[nm] for nm, t in zip(names, take_a)}
    return space.repair(c1), space.repair(c2)


def _step(n_channels: int, step: int, rng: random.Random) -> int:
    """How many channels one grow/shrink moves: up to 1/8 of the group, in units of the group's step
    (round_to, and whole positions of its conv groups)."""
    units = rng.randint(1, max(1, n_channels // (8 * step)))
    return units * step


def _random_rank(g: GroupSpec, rng: random.Random) -> list[int]:
    """A fresh random ranking; with conv groups a shuffle of positions, each position's copies together."""
    if g.channel_groups == 1:
        rank = list(range(g.n_channels))
        rng.shuffle(rank)
        return rank
    positions = list(range(g.period))
    rng.shuffle(positions)
    return g.copies(positions)


def mutate(genome: Genome, space: SearchSpace, rng: random.Random, share: float,
           criteria: Sequence[str]) -> Genome:
    """Touch each group with probability `share` (at least one): grow, shrink or re-draw it."""
    names = space.names
    chosen = [nm for nm in names if rng.random() < share] or [rng.choice(names)]
    kept = {nm: set(genome[nm]) for nm in names}
    for nm in chosen:
        g = space.group(nm)
        op = rng.choice(("grow", "shrink", "redraw"))
        criterion = rng.choice(criteria)
        current = kept[nm]
        if op == "redraw":
            kept[nm] = set(keep_by_criterion(space, nm, len(current), criterion, rng))
            continue
        rank = _random_rank(g, rng) if criterion == "random" else space.ranking(criterion, nm)
        # k is a multiple of G and the rankings list whole positions, so grow/shrink keep periodicity
        k = _step(g.n_channels, g.step, rng)
        if op == "grow":
            current.update([c for c in rank if c not in current][:k])
        else:
            drop = [c for c in reversed(rank) if c in current][:k]
            if len(current) - len(drop) >= g.floor:
                current.difference_update(drop)
            else:  # a shrink below the floor becomes a shrink to the floor
                current.difference_update(drop[: len(current) - g.floor])
    return space.repair(kept)
