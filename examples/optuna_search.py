"""Multi-objective Optuna study over evoprune's fitness: a trial proposes per-group keep shares.

    pip install -e ".[optuna]"
    python examples/optuna_search.py --trials 30 --set fitness.steps=20   # the parent: trained once, cached in runs/example-parent
"""
from __future__ import annotations

import argparse

import optuna

from evoprune import build_fitness, load_config


def run_study(fitness, n_trials: int, seed: int = 0) -> optuna.Study:
    """Maximise validation accuracy, minimise size ratio, with Optuna's NSGA-II sampler."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        keep = {g.name: trial.suggest_float(g.name, g.floor / g.n_channels, 1.0) for g in fitness.space.groups}
        [obj] = fitness([fitness.space.from_keep_ratios(keep)])
        trial.set_user_attr("n_params", obj.n_params)
        return obj.accuracy, obj.size_ratio

    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return study


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--parent-dir", default="runs/example-parent",
                    help="where the trained parent is cached: trained there on the first call, reused after "
                         "(as long as the config asks for the same parent); a `train-parent` directory works too")
    ap.add_argument("--trials", type=int, default=30)
    args = ap.parse_args()
    fitness = build_fitness(load_config(args.config, args.set), run_dir=args.parent_dir)
    study = run_study(fitness, args.trials)
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        print(f"acc {t.values[0]:.4f}  size {t.values[1]:.3f}  params {t.user_attrs['n_params']:,}")


if __name__ == "__main__":
    main()
