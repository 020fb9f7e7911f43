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

    The first `cfg.uniform` share are uniform subnets (every group pruned by the same ratio, as
    torch-pruning's uniform sweep), ratios evenly spaced. For the rest criteria take turns and ratios are
    stratified over [ratio_min, ratio_max] (one draw per stratum, strata shuffled), so the population
    spans small to large subnets for every criterion.
    """
    out = uniform_subnets(space, cfg, round(cfg.uniform * size))
    seen = {g.key() for g, _ in out}
    size -= len(out)
    strata = list(range(size))
    rng.shuffle(strata)
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


def uniform_subnets(space: SearchSpace, cfg: PopulationConfig, n: int) -> list[tuple[Genome, str]]:
    """Up to `n` distinct uniform subnets: ratio i of n evenly spaced over [ratio_min, ratio_max], criteria in turn."""
    out: list[tuple[Genome, str]] = []
    seen: set[str] = set()
    for i in range(n):
        criterion = cfg.criteria[i % len(cfg.criteria)]
        ratio = cfg.ratio_min + (cfg.ratio_max - cfg.ratio_min) * (i + 0.5) / n
        genome = space.uniform(1.0 - ratio, criterion)
        if genome.key() not in seen:
            seen.add(genome.key())
            out.append((genome, criterion))
    return out
