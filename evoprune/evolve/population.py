"""Initial population: torch-pruning criteria x pruning ratios x per-group jitter (no torch)."""
from __future__ import annotations

import random

from evoprune.config import PopulationConfig
from evoprune.genome import Genome
from evoprune.pruning.space import SearchSpace


def keep_by_criterion(space: SearchSpace, name: str, k: int, criterion: str, rng: random.Random) -> tuple[int, ...]:
    """The `k` channels of a group a criterion keeps; 'random' draws a fresh permutation."""
    if criterion == "random":
        return tuple(sorted(rng.sample(range(space.group(name).n_channels), k)))
    return space.top_k(name, k, criterion)


def pruned_genome(space: SearchSpace, criterion: str, ratio: float, jitter: float, rng: random.Random) -> Genome:
    """Prune each group by `ratio` +- `jitter` (share of channels removed) along `criterion`."""
    kept = {}
    for g in space.groups:
        r = min(max(ratio + rng.uniform(-jitter, jitter), 0.0), 1.0)
        k = g.nearest_legal(round((1.0 - r) * g.n_channels))
        kept[g.name] = keep_by_criterion(space, g.name, k, criterion, rng)
    return space.repair(kept, criterion)


def initial_population(space: SearchSpace, cfg: PopulationConfig, size: int,
                       rng: random.Random) -> list[tuple[Genome, str]]:
    """`size` distinct genomes with the criterion each came from.

    Criteria take turns and ratios are stratified over [ratio_min, ratio_max] (one draw per
    stratum, strata shuffled), so the population spans small to large subnets for every criterion.
    """
    strata = list(range(size))
    rng.shuffle(strata)
    out: list[tuple[Genome, str]] = []
    seen: set[str] = set()
    for i in range(size):
        criterion = cfg.criteria[i % len(cfg.criteria)]
        for attempt in range(20):
            u = (strata[i] + rng.random()) / size if attempt == 0 else rng.random()
            ratio = cfg.ratio_min + (cfg.ratio_max - cfg.ratio_min) * u
            genome = pruned_genome(space, criterion, ratio, cfg.jitter, rng)
            if genome.key() not in seen:
                break
        else:
            continue  # a space too small for `size` distinct genomes: fewer individuals
        seen.add(genome.key())
        out.append((genome, criterion))
    return out
