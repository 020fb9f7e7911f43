"""Benchmark: the sequential evaluator's CPU options side by side (worker pool x number of workers).

Why evoprune's CPU defaults are `evaluator.pool: processes` (forked workers, free of the GIL) and
`evaluator.threads: 0` (one worker per core plus one): the same genomes, fine-tune budget and machine,
in one process with interleaved repeats, next to the naive loop of experiments/bench_fitness.py.
channels_last is not among the options any more: its CPU backward pass corrupts the heap on every
torch tried (2.1.2 to 2.15.0), see the README.

    python experiments/bench_cpu_options.py                 # ResNet-20 @32x32 and digits, P = 16
    python experiments/bench_cpu_options.py --quick         # a smoke run

Writes results/bench_cpu_options.json and results/bench_cpu_options.md (command, commit, machine, date).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

from bench_fitness import ROOT, make_task, naive_loop, timed
from provenance import provenance

from evoprune.fitness.evaluators import SequentialEvaluator
from evoprune.evolve.population import initial_population

CORES = os.cpu_count() or 1
VARIANTS = {  # name: (evaluator.pool, evaluator.threads)
    "threads_one_per_core": ("threads", CORES),
    "processes_one_per_core": ("processes", CORES),
    "processes_one_per_core_plus_one": ("processes", CORES + 1),  # the default
}


def bench(task: str, population: int, steps: int, batch: int, repeat: int) -> dict:
    base, cfg = make_task(task, "cpu", steps, batch)
    genomes = [g for g, _ in initial_population(base.space, cfg.population, population, random.Random(population))]
    runs = {"naive": lambda: naive_loop(base, genomes)}
    objectives: dict[str, list] = {}
    for name, (pool, workers) in VARIANTS.items():
        # Made once, as a search makes it once per run: the workers fork in the first repeat, then are reused.
        evaluator = SequentialEvaluator(base.task, base.parent, threads=workers, pool=pool)

        def run(evaluator=evaluator, name=name) -> None:
            objectives[name] = [(o.accuracy, o.kd_loss) for o in evaluator.evaluate(genomes)]
        runs[name] = run
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):  # interleaved: a noisy machine disturbs every variant alike
        for name, fn in runs.items():
            times[name].append(timed(fn, base.device)[0])
    row = {"task": task, "population": population, "steps": steps, "batch": batch, "repeat": repeat}
    for name in runs:
        row[f"{name}_ips"] = population / statistics.median(times[name])
        row[f"{name}_ips_runs"] = [population / t for t in times[name]]
        print(f"  {task} P={population} {name:24s} {row[f'{name}_ips']:7.2f} ind/s", flush=True)
    row["bitwise_same"] = all(objectives[name] == objectives["threads_one_per_core"] for name in VARIANTS)
    return row


def write_markdown(doc: dict, path: Path) -> None:
    names = list(VARIANTS)
    p = doc["provenance"]
    lines = ["# Sequential evaluator on a CPU: worker pool x number of workers", "",
             f"- command: `{p['command']}`", f"- commit {p['commit']}, torch {p['torch']}, Python {p['python']}",
             f"- machine: {p['machine']['cpu']}, {p['machine']['cores']} cores; {p['calibration']}",
             f"- date: {p['date']}", "",
             "Individuals per second (median of interleaved repeats) and, in brackets, the ratio to the naive loop.",
             "", "| task | P | naive | " + " | ".join(n.replace("_", " ") for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in doc["results"]:
        cells = [f"{r[f'{n}_ips']:.2f} ({r[f'{n}_ips'] / r['naive_ips']:.2f}x)" for n in names]
        lines.append(f"| {r['task']} | {r['population']} | {r['naive_ips']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Every variant gave bitwise the same objectives in every row: "
              f"{all(r['bitwise_same'] for r in doc['results'])}."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="resnet20,digits")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repeats; the median is reported")
    ap.add_argument("--quick", action="store_true", help="smoke run: P = 4, 2 steps, 1 repeat")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    if args.quick:
        args.population, args.steps, args.repeat = 4, 2, 1
    results = [bench(t, args.population, args.steps, args.batch, args.repeat) for t in args.tasks.split(",")]
    doc = {"provenance": provenance(), "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_cpu_options_quick" if args.quick else "bench_cpu_options"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_markdown(doc, out / f"{name}.md")
    print(f"wrote {out / name}.json and .md")


if __name__ == "__main__":
    main()
