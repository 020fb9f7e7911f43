"""Search quality against the baselines at an equal number of fitness evaluations.

Methods (same Fitness, same budget of evaluations per run):
  uniform  torch-pruning with one keep ratio for every group (L2 ranking), a sweep of ratios
  random   random genomes over the same space (per-group keep share and channels at random)
  ga_l*    the classic single-objective GA (accuracy - lambda * size, tournament, layer-swap crossover)
  evoprune NSGA-II

    python experiments/compare.py                      # both tasks, seeds 0 1 2
    python experiments/compare.py --tasks digits --seeds 0 --budget 40   # a quick look

Writes results/compare.json, results/compare.md and results/fronts.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

from evoprune import build_fitness, load_config
from evoprune.config import stream_seed
from evoprune.fitness.losses import hinton_kd
from evoprune.genome import Genome
from evoprune.metrics import accuracy
from evoprune.objectives import Objectives
from evoprune.evolve import Search, front_indices, hypervolume

ROOT = Path(__file__).resolve().parents[1]
# Every method gets the same budget; the searches use populations of 16 so that the budget buys
# several generations.
COMMON = ["search.population=16", "search.offspring=16"]
TASKS = {
    # the embedded default: digits 8x8 with its small residual CNN
    "digits": [],
    # a CIFAR-style ResNet-20 parent on the digits resized to 32x32
    # (its short fine-tune is 10 steps, so BN statistics are recalibrated before scoring: without it,
    # pruned ResNet-20s score near chance on validation and the search has no signal)
    "resnet20_digits32": ["parent.arch=resnet20", "data.image_size=32", "parent.epochs=15", "fitness.steps=10",
                          "fitness.batch_size=32", "fitness.adaptive_bn=8"],
}
GA_LAMBDAS = (0.1, 0.5)
EXTRA: list[str] = []  # --set overrides for every task


def uniform_genomes(space, budget: int) -> list[Genome]:
    """A sweep of one keep ratio for all groups, from the floors to the full network, deduplicated."""
    out, seen = [], set()
    for i in range(4 * budget):
        keep = 0.02 + 0.98 * (i % budget + 0.5 * (i // budget)) / budget
        g = space.uniform(min(keep, 1.0), criterion="l2")
        if g.key() not in seen:
            seen.add(g.key())
            out.append(g)
        if len(out) == budget:
            break
    return out


def random_genomes(space, budget: int, seed: int) -> list[Genome]:
    rng = random.Random(stream_seed(seed, "baseline.random"))
    out, seen = [], set()
    while len(out) < budget:
        kept = {}
        for g in space.groups:
            k = g.nearest_legal(rng.randint(g.floor, g.n_channels))
            kept[g.name] = rng.sample(range(g.n_channels), k)
        genome = space.repair(kept)
        if genome.key() not in seen:
            seen.add(genome.key())
            out.append(genome)
    return out


def search_run(fitness, mode: str, budget: int, scalar_lambda: float = 0.0) -> tuple[list[Genome], list[Objectives], list[str]]:
    """Run evoprune's search (pareto or scalar GA) for exactly `budget` evaluations on a shared fitness
    (no run directory: the state it returns is all that is needed)."""
    settings = dataclasses.replace(fitness.cfg.search, mode=mode, max_evaluations=budget, scalar_lambda=scalar_lambda,
                                   generations=10 ** 6)  # the evaluation budget decides
    state = Search(fitness, progress=False, log=lambda line: None, search=settings).run()
    return ([r.genome for r in state.records], [r.objectives for r in state.records],
            [r.origin for r in state.records])


def final_finetune(fitness, genome: Genome, epochs: int, seed: int) -> float:
    """The same final KD fine-tune for every compared subnet; returns TEST accuracy."""
    from evoprune.pruning.materialise import materialise

    cfg = fitness.cfg.fitness
    data = fitness.data
    model = materialise(fitness.parent, genome, fitness.example_input).to(fitness.device)
    teacher = fitness.parent
    gen = torch.Generator().manual_seed(seed)
    batch = 64
    steps = epochs * ((len(data.train_y) + batch - 1) // batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.train_y), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x, y = data.train_x[idx].to(fitness.device), data.train_y[idx].to(fitness.device)
            with torch.no_grad():
                t = teacher(x)
            loss = hinton_kd(model(x), t, y, cfg.temperature, cfg.alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return accuracy(model, data.test_x.to(fitness.device), data.test_y.to(fitness.device))


def nearest(genomes: list[Genome], objs: list[Objectives], target: float) -> int:
    """Index of the best-accuracy subnet among those within the target size (nearest below it)."""
    under = [i for i, o in enumerate(objs) if o.size_ratio <= target and o.status == "ok"]
    pool = under or range(len(objs))
    return max(pool, key=lambda i: (objs[i].accuracy, -abs(objs[i].size_ratio - target)))


def run_task(task: str, seed: int, budget: int, final_epochs: int) -> tuple[list[dict], dict]:
    cfg = load_config(overrides=COMMON + TASKS[task] + [f"seed={seed}"] + EXTRA)
    t0 = time.perf_counter()
    fitness = build_fitness(cfg, run_dir=None, progress=False)
    print(f"[{task} seed {seed}] parent val acc {fitness.parent_accuracy:.4f} "
          f"({time.perf_counter() - t0:.0f}s), {len(fitness.space.groups)} groups, budget {budget}", flush=True)
    runs: dict[str, tuple[list[Genome], list[Objectives], list[str]]] = {}
    g = uniform_genomes(fitness.space, budget)
    runs["uniform"] = (g, fitness(g), ["l2"] * len(g))
    g = random_genomes(fitness.space, budget, seed)
    runs["random"] = (g, fitness(g), ["random"] * len(g))
    for lam in GA_LAMBDAS:
        runs[f"ga_l{lam}"] = search_run(fitness, "scalar", budget, lam)
    runs["evoprune"] = search_run(fitness, "pareto", budget)
    rows = []
    for method, (genomes, objs, _) in runs.items():
        hv = hypervolume(objs)
        rows.append({"method": method, "seed": seed, "task": task, "hypervolume": hv, "evaluations": len(objs),
                     "front": [[objs[i].size_ratio, objs[i].accuracy] for i in front_indices(objs)]})
        print(f"[{task} seed {seed}] {method:10s} HV {hv:.4f} ({len(objs)} evaluations)", flush=True)
    finals = {}
    for method in ("uniform", "evoprune"):
        genomes, objs, _ = runs[method]
        for target in (0.25, 0.5):
            i = nearest(genomes, objs, target)
            test_acc = final_finetune(fitness, genomes[i], final_epochs, seed)
            finals[f"{method}@{target}"] = {"size_ratio": objs[i].size_ratio, "val_accuracy": objs[i].accuracy,
                                            "test_accuracy_after_final_kd": test_acc}
            print(f"[{task} seed {seed}] {method}@{target}: size {objs[i].size_ratio:.3f} "
                  f"val {objs[i].accuracy:.4f} -> test {test_acc:.4f} after final KD", flush=True)
    genomes, objs, origins = runs["evoprune"]
    lineage: dict[str, int] = {}
    for i in front_indices(objs):
        for crit in origins[i].split("+"):
            lineage[crit] = lineage.get(crit, 0) + 1
    parent_test = accuracy(fitness.parent, fitness.data.test_x.to(fitness.device), fitness.data.test_y.to(fitness.device))
    extra = {"task": task, "seed": seed, "parent_val_accuracy": fitness.parent_accuracy,
             "parent_test_accuracy": parent_test, "final": finals, "evoprune_front_lineage": lineage}
    return rows, extra


def write_outputs(rows: list[dict], extras: list[dict], out: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    meta = {"command": command, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}}
    (out / "compare.json").write_text(json.dumps({**meta, "results": rows, "details": extras}, indent=1) + "\n")
    tasks = sorted({r["task"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# Search quality at an equal number of fitness evaluations", "",
             f"Command: `{command}`  ", f"Date: {meta['date']}  ", f"Machine: {json.dumps(meta['machine'])}", "",
             "Hypervolume of (validation accuracy, params ratio), reference (0, 1); higher is better.", ""]
    for task in tasks:
        seeds = sorted({r["seed"] for r in rows if r["task"] == task})
        lines += [f"## {task}", "", "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for m in methods:
            hv = [next(r["hypervolume"] for r in rows if r["task"] == task and r["method"] == m and r["seed"] == s)
                  for s in seeds]
            lines.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in hv) + f" | {np.mean(hv):.4f} |")
        wins = [all(next(r["hypervolume"] for r in rows if r["task"] == task and r["method"] == "evoprune" and r["seed"] == s)
                    > next(r["hypervolume"] for r in rows if r["task"] == task and r["method"] == b and r["seed"] == s)
                    for b in ("uniform", "random")) for s in seeds]
        lines += ["", f"evoprune above uniform and random in {sum(wins)} of {len(seeds)} seeds.", "",
                  "Test accuracy after the same final KD fine-tune (subnet nearest below the size):", "",
                  "| seed | parent test | uniform@25% | evoprune@25% | uniform@50% | evoprune@50% |", "|---|---|---|---|---|---|"]
        for e in (e for e in extras if e["task"] == task):
            f = e["final"]
            cell = lambda k: f"{f[k]['test_accuracy_after_final_kd']:.4f} ({f[k]['size_ratio']:.2f})"  # noqa: E731
            lines.append(f"| {e['seed']} | {e['parent_test_accuracy']:.4f} | {cell('uniform@0.25')} | "
                         f"{cell('evoprune@0.25')} | {cell('uniform@0.5')} | {cell('evoprune@0.5')} |")
        lineage: dict[str, int] = {}
        for e in (e for e in extras if e["task"] == task):
            for k, v in e["evoprune_front_lineage"].items():
                lineage[k] = lineage.get(k, 0) + v
        lines += ["", "Criteria the evoprune fronts' members descend from (count over seeds): " +
                  ", ".join(f"{k} {v}" for k, v in sorted(lineage.items(), key=lambda kv: -kv[1])), ""]
    (out / "compare.md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.4), squeeze=False)
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            pts = np.array(r["front"]).reshape(-1, 2)
            ax.plot(pts[:, 0], pts[:, 1], drawstyle="steps-post", color=colors[r["method"]], alpha=0.8,
                    label=r["method"] if r["seed"] == min(x["seed"] for x in rows) else None)
        ax.set_title(task)
        ax.set_xlabel("params ratio")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="digits,resnet20_digits32")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", default="digits=112,resnet20_digits32=80",
                    help="evaluations per run, per task (task=N,...) or one number")
    ap.add_argument("--final-epochs", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="config override for every task")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    budgets = {k: int(v) for k, v in (p.split("=") for p in args.budget.split(","))} if "=" in args.budget \
        else {t: int(args.budget) for t in TASKS}
    EXTRA.extend(args.set)
    rows, extras = [], []
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r, e = run_task(task, seed, budgets[task], args.final_epochs)
            rows += r
            extras.append(e)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Tasks run separately (they take long) land in one set of outputs: keep the other tasks' results.
    previous = out / "compare.json"
    command = "python " + " ".join(sys.argv)
    if previous.is_file():
        old = json.loads(previous.read_text())
        done = {r["task"] for r in rows}
        rows = [r for r in old["results"] if r["task"] not in done] + rows
        extras = [e for e in old["details"] if e["task"] not in done] + extras
        if old.get("command") and not done.issuperset({r["task"] for r in old["results"]}):
            command = f"{old['command']}; {command}"
    write_outputs(rows, extras, out, command)
    print(f"wrote {out}/compare.json, compare.md, fronts.png")


if __name__ == "__main__":
    main()
