"""Initial population: torch-pruning criteria x pruning ratios x per-group jitter (no torch)."""
from __future__ import annotations

import random

from evoprune.config import PopulationConfig
from evoprune.genome import Genome
from evoprune.pruning.draw import pruned_genome
from evoprune.pruning.space import SearchSpace


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
