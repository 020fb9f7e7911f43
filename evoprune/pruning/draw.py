"""Genomes drawn along an importance criterion: what the initial population and mutation start from (no torch)."""
from __future__ import annotations

import random

from evoprune.genome import Genome
from evoprune.pruning.space import SearchSpace


def keep_by_criterion(space: SearchSpace, name: str, k: int, criterion: str, rng: random.Random) -> tuple[int, ...]:
    """The `k` channels of a group a criterion keeps; 'random' draws a fresh permutation.

    With conv groups 'random' draws whole positions (k // G of them), so the kept set stays periodic.
    """
    if criterion == "random":
        g = space.group(name)
        if g.channel_groups > 1:
            return tuple(sorted(g.copies(rng.sample(range(g.period), k // g.channel_groups))))
        return tuple(sorted(rng.sample(range(g.n_channels), k)))
    return space.top_k(name, k, criterion)


def pruned_genome(space: SearchSpace, criterion: str, ratio: float, jitter: float, rng: random.Random) -> Genome:
    """Prune each group by `ratio` +- `jitter` (share of channels removed) along `criterion`."""
    kept = {}
    for g in space.groups:
        r = min(max(ratio + rng.uniform(-jitter, jitter), 0.0), 1.0)
        k = g.nearest_legal(round((1.0 - r) * g.n_channels))
        kept[g.name] = keep_by_criterion(space, g.name, k, criterion, rng)
    return space.repair(kept, criterion)
