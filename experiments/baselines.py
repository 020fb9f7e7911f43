"""The genomes a user would evaluate instead of evoprune's search: torch-pruning's uniform and global
pruning sweeps (each with the criterion a pilot picks), and random genomes whose sizes cover the range evenly.

Each method returns exactly `n` distinct genomes (or raises), pilot included, so that every method
gets the same number of fitness evaluations.
"""
from __future__ import annotations

import copy
import random
from typing import Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from evoprune.config import stream_seed
from evoprune.genome import Genome
from evoprune.metrics import count_macs
from evoprune.parent.models import classifier_of
from evoprune.pruning.groups import all_trainable
from evoprune.pruning.importance import SCORERS
from evoprune.pruning.space import SearchSpace


def macs_ratio(fitness, genome: Genome) -> float:
    """The genome's MACs relative to the parent's, without evaluating it."""
    return count_macs(fitness.subnet(genome), fitness.example_input, scratch=True) / fitness.parent_macs


def at_most(fitness, make: Callable[[float], Genome], target: float, steps: int = 10) -> Genome:
    """The largest genome `make(x)` (x in (0, 1], size growing with x) whose MACs ratio is at most
    `target`, by bisection (the smallest one where none is)."""
    lo, hi = 0.0, 1.0
    best = make(1e-6)
    for _ in range(steps):
        mid = (lo + hi) / 2
        g = make(mid)
        if macs_ratio(fitness, g) <= target:
            lo, best = mid, g
        else:
            hi = mid
    return best


def spread_evenly(candidates: Sequence[tuple[float, Genome]], n: int, what: str) -> list[Genome]:
    """`n` of the distinct (size, genome) candidates whose sizes are spaced most evenly from the
    smallest to the largest (greedy: for each evenly spaced size, the nearest unused candidate)."""
    unique: dict[str, tuple[float, Genome]] = {}
    for size, genome in candidates:
        unique.setdefault(genome.key(), (size, genome))
    pool = sorted(unique.values(), key=lambda t: t[0])
    if len(pool) < n:
        raise ValueError(f"{what} gives only {len(pool)} new distinct genomes, fewer than the {n} it needs: "
                         "lower the budget")
    if n == 0:
        return []
    lo, hi = pool[0][0], pool[-1][0]
    chosen: set[int] = set()
    for i in range(n):
        target = lo + (hi - lo) * i / max(1, n - 1)
        chosen.add(min((j for j in range(len(pool)) if j not in chosen), key=lambda j: abs(pool[j][0] - target)))
    return [pool[j][1] for j in sorted(chosen)]


def sweep(fitness, n: int, make: Callable[[float], Genome], exclude: set[str], what: str,
          grid: int = 400) -> list[Genome]:
    """`n` genomes `make(x)` over a grid of x in (0, 1) with evenly spaced MACs, none in `exclude` and
    none the full network."""
    seen = set(exclude) | {fitness.space.full().key()}
    candidates = []
    for i in range(1, grid):
        g = make(i / grid)
        if g.key() not in seen:
            seen.add(g.key())
            candidates.append((macs_ratio(fitness, g), g))
    return spread_evenly(candidates, n, what)


class GlobalRanking:
    """torch-pruning's global pruning: every group's channel importance as MetaPruner computes it (its
    importance object, normalised per group), one threshold over all groups.

    Unlike MetaPruner(global_pruning=True), each group keeps at least its floor in the search space: the
    pruner leaves a group whose every channel falls below the threshold whole (and its max_pruning_ratio
    does not bound a one-step global prune), which at small sizes makes its subnets larger than asked.
    The importance is computed once; each ratio is then a threshold.
    """

    def __init__(self, parent: nn.Module, example_input: torch.Tensor, space: SearchSpace, criterion: str,
                 calib: tuple[torch.Tensor, torch.Tensor]):
        self.space, self.criterion = space, criterion
        model = copy.deepcopy(parent).cpu().eval()
        names = {m: name for name, m in model.named_modules()}
        roots = set(space.names)  # a group's channels are numbered as its root layer's output channels
        self.scores: dict[str, torch.Tensor] = {}
        with all_trainable(model):
            if criterion == "taylor":  # Taylor importance reads the gradients
                model.zero_grad()
                nn.functional.cross_entropy(model(calib[0]), calib[1]).backward()
            pruner = tp.pruner.MetaPruner(model, example_input.cpu(), importance=SCORERS[criterion](),
                                          global_pruning=True, ignored_layers=[classifier_of(model)])
            for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                  root_module_types=pruner.root_module_types):
                imp = pruner.estimate_importance(group)
                if imp is None:  # e.g. bn_scale on a group without BatchNorm: torch-pruning skips it too
                    continue
                for dep, idxs in group:
                    name = names.get(dep.target.module)
                    if name in roots and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                        if len(idxs) != len(imp):
                            raise ValueError(f"group {name}: {len(imp)} importance scores for {len(idxs)} channels")
                        score = torch.full((space.group(name).n_channels,), float("inf"))
                        score[torch.as_tensor([int(i) for i in idxs])] = imp.detach().float().cpu()
                        self.scores[name] = score
                        break
        if not self.scores:
            raise ValueError(f"torch-pruning ranks no group of this parent by {criterion}")

    def genome(self, ratio: float) -> Genome:
        """Remove the `ratio` share of all ranked channels with the lowest scores, floors kept."""
        every = torch.cat(list(self.scores.values()))
        n_pruned = int(ratio * len(every))
        if n_pruned == 0:
            return self.space.full()
        threshold = torch.kthvalue(every, n_pruned).values
        kept = {}
        for g in self.space.groups:
            score = self.scores.get(g.name)
            if score is None:
                kept[g.name] = range(g.n_channels)
                continue
            order = torch.argsort(score, descending=True, stable=True)
            kept[g.name] = order[:max(int((score > threshold).sum()), g.floor)].tolist()
        return self.space.repair(kept, self.criterion)


def piloted_sweep(fitness, n: int, criteria: Sequence[str], maker: Callable[[str], Callable[[float], Genome]],
                  targets: Sequence[float], what: str) -> tuple[list[Genome], dict]:
    """A sweep with the criterion a careful user would choose: first a pilot scores each criterion's
    largest subnet at or under every target (matched sizes), then the best criterion (mean validation
    accuracy) sweeps with the rest of the `n` evaluations. The pilot's genomes count among the `n`."""
    makers = {c: maker(c) for c in criteria}
    pilot = {c: [at_most(fitness, makers[c], t) for t in targets] for c in criteria}
    flat = list({g.key(): g for gs in pilot.values() for g in gs}.values())
    if len(flat) >= n:
        raise ValueError(f"the {what} pilot alone needs {len(flat)} evaluations: raise the budget above it")
    scores = dict(zip((g.key() for g in flat), fitness(flat)))
    means = {c: sum(scores[g.key()].accuracy for g in gs) / len(gs) for c, gs in pilot.items()}
    best = max(means, key=means.get)
    rest = sweep(fitness, n - len(flat), makers[best], set(scores), f"the {what} ({best})")
    return flat + rest, {"criterion": best, "pilot": {"mean_val_accuracy": means, "evaluations": len(flat)}}


def size_even_random(fitness, n: int, seed: int, steps: int = 8) -> list[Genome]:
    """Random genomes (random channels, random per-group widths) whose MACs are spread evenly.

    Drawing each group's width uniformly puts almost every subnet near half the MACs. Instead the i-th
    genome aims at the i-th of `n` evenly spaced MACs ratios: each group draws a random width factor
    (log-normal), one common scale of all factors is found by bisection so that the MACs meet the aim,
    and each group keeps that many channels chosen at random.
    """
    space = fitness.space
    rng = random.Random(stream_seed(seed, "baseline.random"))
    smallest = macs_ratio(fitness, space.uniform(1e-6))
    out: list[Genome] = []
    seen = {space.full().key()}
    for _ in range(50 * n):
        aim = smallest + (1.0 - smallest) * (len(out) + rng.random()) / n
        factor = {g.name: rng.lognormvariate(0.0, 0.5) for g in space.groups}
        order = {g.name: rng.sample(range(g.n_channels), g.n_channels) for g in space.groups}

        def genome_at(scale: float) -> Genome:
            return Genome({g.name: order[g.name][:g.nearest_legal(round(g.n_channels * min(1.0, scale * factor[g.name])))]
                           for g in space.groups})

        lo, hi = 0.0, 1.0 / min(factor.values())  # at hi every group is whole
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if macs_ratio(fitness, genome_at(mid)) < aim else (lo, mid)
        genome = genome_at(hi)
        if genome.key() not in seen:
            seen.add(genome.key())
            out.append(genome)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} distinct random genomes in {50 * n} draws: the space is too small for {n}")
