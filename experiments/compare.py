"""Search quality against the baselines a user would pick instead, at exactly equal fitness evaluations.

Methods (one Fitness per seed, shared, so a genome two methods both propose is scored once and
counted for each):
  uniform   torch-pruning's one-ratio-for-every-group sweep, with the criterion a pilot finds best
  global    torch-pruning's MetaPruner(global_pruning=True) at a sweep of ratios, same kind of pilot
  random    random genomes whose MACs cover the range evenly
  scalar_ga the classic single-objective GA (accuracy - lambda * MACs ratio, tournament, layer-swap)
  evoprune  NSGA-II on (accuracy, MACs ratio)

For each MACs target, each method's best validation member at or under it gets the same final KD
fine-tune (evoprune's `distill_model`, same epochs, data and seed) and is scored on the test split.
Every unit of work (seed x method search; seed x genome final fine-tune) is written to UNITS as it
ends, so an interrupted benchmark continues where it stopped; --report rewrites the tables only.

    python experiments/compare.py                                  # Fashion-MNIST, seeds 0 1 2 (hours on 2 cores)
    python experiments/compare.py --task digits --seeds 0 --budget 32 --final-epochs 1   # a quick look
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from baselines import GlobalRanking, piloted_sweep, size_even_random
from compare_report import write_report
from provenance import provenance

from evoprune import build_fitness, load_config
from evoprune.atomic import write_json
from evoprune.config import stream_seed
from evoprune.data.task import load_task
from evoprune.deploy.distill import distill_model
from evoprune.evolve import Search, hypervolume
from evoprune.genome import Genome
from evoprune.metrics import accuracy
from evoprune.objectives import Objectives
from evoprune.parent.train import get_parent

ROOT = Path(__file__).resolve().parents[1]
FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
TASKS = {
    # CIFAR-style ResNet-20 on Fashion-MNIST's original files; the parent is trained once (seed 0's
    # split) and every seed searches the same parent. Sizes are MACs.
    "fmnist": ["data.name=fashion_mnist", f"data.root={FMNIST_ROOT}", "data.download=false", "data.split_seed=0",
               "parent.arch=resnet20", "parent.epochs=15", "parent.patience=0", "parent.lr=0.1",
               "parent.batch_size=128", "fitness.finetune_samples=2048", "fitness.val_samples=2000"],
    # the embedded default (digits 8x8, small CNN): a smoke test of the benchmark itself
    "digits": ["data.split_seed=0"],
}
COMMON = ["search.size_metric=macs", "search.population=16", "search.offspring=16", "search.patience=0"]
# evoprune with one lever changed: (search, population) settings -> the lever's; judged like evoprune
LEVERS = {
    # half the initial population seeded by each criterion's uniform subnets
    "evoprune_uniform": lambda search, pop: (search, dataclasses.replace(pop, uniform=0.5)),
    # population size at equal cost: 8 kept, 8 children, so 48 evaluations make 5 generations instead of 2
    "evoprune_pop8": lambda search, pop: (dataclasses.replace(search, population=8, offspring=8), pop),
    # importance criteria only, for the initial population and the mutation's grow/shrink/re-draw (no random ranking)
    "evoprune_ranked": lambda search, pop: (search, dataclasses.replace(
        pop, criteria=tuple(c for c in pop.criteria if c != "random"))),
}
METHODS = ("uniform", "global", "random", "scalar_ga", "evoprune", *LEVERS)
TARGETS = (0.10, 0.25, 0.50)
SWEEP_CRITERIA = ("l1", "l2", "bn_scale", "taylor", "lamp", "fpgm")


def pick(objs: list[Objectives], target: float) -> int | None:
    """Index of the best validation accuracy among members at or under `target` of the MACs (ties: the
    smaller), or None when the method has none there."""
    under = [i for i, o in enumerate(objs) if o.macs_ratio <= target + 1e-12 and o.valid]
    return max(under, key=lambda i: (objs[i].accuracy, -objs[i].macs_ratio)) if under else None


def run_method(fitness, method: str, budget: int, seed: int, scalar_lambda: float) -> tuple[list[Genome], dict]:
    """The genomes `method` evaluates with `budget` evaluations, and what it recorded on the way."""
    space = fitness.space
    criteria = [c for c in SWEEP_CRITERIA if c in space.criteria]
    if method == "uniform":
        return piloted_sweep(fitness, budget, criteria, lambda c: lambda keep: space.uniform(keep, c), TARGETS,
                             "uniform sweep")
    if method == "global":
        # Taylor's gradients on the batch the space's own rankings were computed on (build_fitness)
        gen = torch.Generator().manual_seed(stream_seed(fitness.cfg.seed, "space.calibration"))
        rows = torch.randperm(len(fitness.data.train_y), generator=gen)[:256]
        calib = (fitness.data.train_x[rows], fitness.data.train_y[rows])

        def maker(criterion: str):
            ranking = GlobalRanking(fitness.parent, fitness.example_input, space, criterion, calib)
            return lambda keep: ranking.genome(1.0 - keep)
        return piloted_sweep(fitness, budget, criteria, maker, TARGETS, "global pruning sweep")
    if method == "random":
        return size_even_random(fitness, budget, seed), {}
    mode = "scalar" if method == "scalar_ga" else "pareto"
    # every generation adds at most `offspring` evaluations and a stalled one none: `budget` generations bound it
    settings = dataclasses.replace(fitness.cfg.search, mode=mode, max_evaluations=budget, generations=budget,
                                   scalar_lambda=scalar_lambda)
    population = fitness.cfg.population
    if method in LEVERS:
        settings, population = LEVERS[method](settings, population)
    state = Search(fitness, progress=False, log=lambda line: None, search=settings, population=population).run()
    info = {"generations": state.generation, **({"scalar_lambda": scalar_lambda} if mode == "scalar" else {})}
    return [r.genome for r in state.records], info


def search_unit(fitness, method: str, budget: int, seed: int, scalar_lambda: float) -> dict:
    t0 = time.perf_counter()
    genomes, info = run_method(fitness, method, budget, seed, scalar_lambda)
    objs = fitness(genomes)
    if len(objs) != budget or len({g.key() for g in genomes}) != budget:
        raise AssertionError(f"{method} evaluated {len({g.key() for g in genomes})} distinct genomes, not {budget}")
    picks = {}
    for target in TARGETS:
        i = pick(objs, target)
        picks[str(target)] = None if i is None else {"genome": genomes[i].to_json(), "key": genomes[i].key(),
                                                     "objectives": objs[i].to_json()}
    return {"method": method, "seed": seed, "evaluations": len(objs), **info,
            "hypervolume_val": hypervolume(objs), "objectives": [o.to_json() for o in objs], "picks": picks,
            "seconds": time.perf_counter() - t0, "provenance": provenance(calibrate=False)}


def final_unit(fitness, data, genome: Genome, seed: int, epochs: int, samples: int, lr: float) -> dict:
    """The final KD fine-tune every pick gets: evoprune's distillation (the config's `distill` section:
    SGD, cosine schedule, its KD loss) at `lr` from the pruned parent's weights for `epochs` over a fixed,
    seeded `samples` of the train split, no augmentation; test accuracy on the whole test split."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data.train_y), generator=gen)[:samples]
    subset = dataclasses.replace(data, train_x=data.train_x[rows], train_y=data.train_y[rows],
                                 val_x=data.val_x[:2000], val_y=data.val_y[:2000])
    cfg = dataclasses.replace(fitness.cfg.distill, epochs=epochs, lr=lr)
    t0 = time.perf_counter()
    student, _, summary = distill_model(fitness.subnet(genome), fitness.parent, subset, cfg, seed, fitness.device,
                                        fitness.cfg.fitness, aug="none")
    correct = int(round(accuracy(student, data.test_x, data.test_y) * len(data.test_y)))
    return {"key": genome.key(), "seed": seed, "test_correct": correct, "n_test": len(data.test_y),
            "test_accuracy": correct / len(data.test_y), "epochs": epochs, "samples": len(rows),
            "lr": cfg.lr, "batch_size": cfg.batch_size, "kd": cfg.kd, "seconds": time.perf_counter() - t0,
            "history": summary["history"], "provenance": provenance(calibrate=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="fmnist", choices=sorted(TASKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budget", type=int, default=48, help="fitness evaluations per method and seed")
    ap.add_argument("--scalar-lambda", type=float, default=0.3, help="the scalar GA's size penalty")
    ap.add_argument("--final-epochs", type=int, default=3, help="epochs of the final KD fine-tune (other settings: "
                    "the config's distill section, e.g. --set distill.lr=0.02)")
    ap.add_argument("--final-samples", type=int, default=10000, help="train images of the final KD fine-tune")
    # distill's default 0.05 (made for 15 epochs) costs every pick 1.5-9.3 points in 3 epochs (seed 0's 17
    # picks, mean 5.0: results/compare-fmnist-v2 against -v3): the comparison would measure the damage
    ap.add_argument("--final-lr", type=float, default=0.01, help="initial learning rate of the final KD fine-tune")
    ap.add_argument("--set", action="append", default=[], help="config override (for reduced runs)")
    ap.add_argument("--out", default=None, help="results directory (default: results/compare-TASK)")
    ap.add_argument("--parent-dir", default=None, help="where the parent is trained once (default: OUT/parent)")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the units written")
    ap.add_argument("--no-calibration", action="store_true", help="skip timing the machine (tests)")
    args = ap.parse_args()
    out = Path(args.out or ROOT / "results" / f"compare-{args.task}")
    units = out / "units"
    units.mkdir(parents=True, exist_ok=True)
    overrides = TASKS[args.task] + COMMON + args.set
    parent_dir = Path(args.parent_dir) if args.parent_dir else out / "parent"
    resolved = load_config(overrides=overrides).to_dict()  # defaults change between commits: record what was used
    setup = {"task": args.task, "overrides": overrides, "parent_dir": str(parent_dir), "budget": args.budget, "targets": list(TARGETS),
             "final": {"epochs": args.final_epochs, "samples": args.final_samples, "lr": args.final_lr}, "scalar_lambda": args.scalar_lambda,
             "fitness": resolved["fitness"], "search": resolved["search"]}
    setup_file = units / "setup.json"
    if setup_file.is_file() and not args.report:  # --report only reads what the units hold
        held = json.loads(setup_file.read_text())
        if held != setup:
            differ = sorted(k for k in setup.keys() | held.keys() if held.get(k) != setup.get(k))
            sys.exit(f"{units} holds units made with other settings ({', '.join(differ)} differ; {setup_file}); "
                     "choose another --out")
    if not setup_file.is_file():
        write_json(setup_file, setup)
    if not args.report:
        run_all(args, overrides, units, parent_dir)
    write_report(out, units, provenance(calibrate=not args.no_calibration))
    print(f"wrote {out}/compare.json, compare.md, fronts.png", flush=True)


def run_all(args: argparse.Namespace, overrides: list[str], units: Path, parent_dir: Path) -> None:
    cfg0 = load_config(overrides=overrides + ["seed=0"])
    data = load_task(cfg0)
    parent, meta = get_parent(cfg0, data, parent_dir, progress=True)  # trained once, then reused
    info = units / "parent.json"
    if not info.is_file():
        write_json(info, {**meta, "test_accuracy": accuracy(parent, data.test_x, data.test_y),
                          "n_test": len(data.test_y), "data": data.describe()})
    print(f"parent: {json.loads(info.read_text())['test_accuracy']:.4f} test accuracy", flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = load_config(overrides=overrides + [f"seed={seed}", f"parent.weights={parent_dir / 'parent.pt'}"])
        fitness = None
        for method in args.methods.split(","):
            path = units / f"search-seed{seed}-{method}.json"
            if not path.is_file():
                fitness = fitness or build_fitness(cfg, data=data, progress=False)
                unit = search_unit(fitness, method, args.budget, seed, args.scalar_lambda)
                write_json(path, unit)
            unit = json.loads(path.read_text())
            print(f"[seed {seed}] {method:9s} {unit['evaluations']} evaluations, HV(val) {unit['hypervolume_val']:.4f}"
                  f" ({unit['seconds']:.0f}s)", flush=True)
            for target, p in unit["picks"].items():
                if p is None:
                    continue
                final = units / f"final-seed{seed}-{p['key']}.json"
                if not final.is_file():
                    fitness = fitness or build_fitness(cfg, data=data, progress=False)
                    write_json(final, final_unit(fitness, data, Genome(p["genome"]), seed, args.final_epochs,
                                                 args.final_samples, args.final_lr))
                f = json.loads(final.read_text())
                print(f"[seed {seed}] {method:9s} @{float(target):.0%}: MACs {p['objectives']['macs_ratio']:.3f} "
                      f"val {p['objectives']['accuracy']:.4f} -> test {f['test_accuracy']:.4f}", flush=True)


if __name__ == "__main__":
    main()
