"""A pymoo Problem wrapping evoprune's fitness: x = per-group keep shares, F = (-accuracy, size).

    pip install -e ".[pymoo]"
    python examples/pymoo_search.py --generations 5 --set fitness.steps=20   # reuses runs/example-parent
"""
from __future__ import annotations

import argparse

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.optimize import minimize

from evoprune import build_fitness, load_config


class PruningProblem(Problem):
    """Each row of x is one subnet; the whole population goes to Fitness in one call (batched)."""

    def __init__(self, fitness):
        self.fitness = fitness
        lower = [g.floor / g.n_channels for g in fitness.space.groups]
        super().__init__(n_var=len(lower), n_obj=2, xl=np.array(lower), xu=np.ones(len(lower)))

    def _evaluate(self, x, out, *args, **kwargs):
        objs = self.fitness([self.fitness.space.from_keep_ratios(list(row)) for row in x])
        out["F"] = np.array([[-o.accuracy, o.size_ratio] for o in objs])


def run(fitness, pop_size: int, generations: int, seed: int = 0):
    return minimize(PruningProblem(fitness), NSGA2(pop_size=pop_size), ("n_gen", generations), seed=seed,
                    verbose=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--parent-dir", default="runs/example-parent",
                    help="where the trained parent is cached: trained there on the first call, reused after "
                         "(as long as the config asks for the same parent); a `train-parent` directory works too")
    ap.add_argument("--pop", type=int, default=16)
    ap.add_argument("--generations", type=int, default=5)
    args = ap.parse_args()
    res = run(build_fitness(load_config(args.config, args.set), run_dir=args.parent_dir), args.pop, args.generations)
    for f in sorted(res.F.tolist(), key=lambda f: f[1]):
        print(f"acc {-f[0]:.4f}  size {f[1]:.3f}")


if __name__ == "__main__":
    main()
