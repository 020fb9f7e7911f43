"""Benchmark: evaluations per second with the Ray backend, 1 and 2 local workers (and the local evaluator).

A workload where evaluation dominates: the digits default parent (simple_cnn, trained here once and
cached), fitness.steps=40, 32 genomes of the initial population, each evaluation timed `--repeats`
times after an untimed warm-up (the evaluators are called directly, past Fitness's cache). Ray
start-up (instance and actors) is timed separately and not in the rate. Every Ray result is checked
against the local evaluator's.

    nice -n 0 python experiments/bench_ray.py            # appends one run to results/bench_ray.json / .md
    python experiments/bench_ray.py --fresh             # start the results over
    python experiments/bench_ray.py --genomes 8 --steps 5 --repeats 1 --out /tmp   # a smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from evoprune import build_fitness, load_config
from evoprune.fitness.evaluators import RayEvaluator, SequentialEvaluator
from evoprune.evolve.population import initial_population

ROOT = Path(__file__).resolve().parents[1]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(evaluate, genomes, repeats: int, warmup: int) -> tuple[list[float], list]:
    """Wall seconds of each repeat, after an untimed warm-up on `warmup` genomes (first-call costs)."""
    evaluate(genomes[:warmup])
    seconds, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = evaluate(genomes)
        seconds.append(time.perf_counter() - start)
    return seconds, out


def same(a: list, b: list) -> bool:
    """Bitwise-equal objectives, wall time aside."""
    strip = lambda o: {k: v for k, v in o.to_json().items() if k != "seconds"}  # noqa: E731
    return [strip(o) for o in a] == [strip(o) for o in b]


def run(args: argparse.Namespace) -> dict:
    import ray

    cfg = load_config(overrides=["data.name=digits", f"fitness.steps={args.steps}"])
    fitness = build_fitness(cfg, args.cache, progress=False)  # the parent is trained once, then cached
    genomes = [g for g, _ in initial_population(fitness.space, cfg.population, args.genomes, random.Random(0))]
    entry: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"),
                   "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
                   "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(),
                               "python": platform.python_version(), "torch": torch.__version__,
                               "ray": ray.__version__},
                   "niceness": os.nice(0), "load_before": load(), "workload": {"parent": cfg.parent.arch, "data": cfg.data.name,
                                                       "steps": args.steps, "genomes": len(genomes),
                                                       "repeats": args.repeats},
                   "results": []}
    threads = os.cpu_count() or 1
    local = SequentialEvaluator(fitness.task, fitness.parent, threads=threads)
    seconds, reference = timed(local.evaluate, genomes, args.repeats, warmup=2 * threads)
    entry["results"].append({"evaluator": f"local sequential, {threads} threads", "workers": 0,
                             "seconds": [round(s, 3) for s in seconds],
                             "evals_per_s": round(len(genomes) / statistics.median(seconds), 2)})
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="error", log_to_driver=False)
    entry["ray_init_s"] = round(time.perf_counter() - start, 2)
    try:
        for workers in args.workers:
            # The same staged task, another evaluator config.
            settings = dataclasses.replace(fitness.cfg.evaluator, backend="ray", workers=workers)
            start = time.perf_counter()
            evaluator = RayEvaluator(fitness.task, fitness.parent, fitness.space, settings, fitness.cfg.parent)
            evaluator.wait_for_workers()  # every actor up before the clock starts
            startup = time.perf_counter() - start
            try:
                seconds, out = timed(evaluator.evaluate, genomes, args.repeats, warmup=2 * workers)
            finally:
                evaluator.close()
            entry["results"].append({"evaluator": f"ray, {workers} worker{'s' * (workers > 1)}", "workers": workers,
                                     "startup_s": round(startup, 2), "seconds": [round(s, 3) for s in seconds],
                                     "evals_per_s": round(len(genomes) / statistics.median(seconds), 2),
                                     "same_objectives_as_local": same(out, reference)})
    finally:
        ray.shutdown()
    rate = {r["workers"]: r["evals_per_s"] for r in entry["results"]}
    if 1 in rate and 2 in rate:
        entry["ratio_2_vs_1_workers"] = round(rate[2] / rate[1], 2)
    entry["load_after"] = load()
    return entry


def write_md(runs: list[dict], path: Path) -> None:
    lines = ["# Ray backend benchmark", "",
             "Evaluations per second (median of the repeats; higher is better) of the same genomes with the",
             "local sequential evaluator and with the Ray backend on 1 and 2 local CPU workers. Ray start-up",
             "(instance, actors rebuilding the parent and staging the task) is not in the rate. `load` is the",
             "1/5/15-minute load average before and after the run: the machine is shared, so runs differ.", ""]
    for i, r in enumerate(runs, 1):
        w = r["workload"]
        lines += [f"## Run {i}: {r['date']}", "",
                  f"- command: `{r['command']}`",
                  f"- machine: {r['machine']['cpu_cores']} cores, {r['machine']['platform']}, python "
                  f"{r['machine']['python']}, torch {r['machine']['torch']}, ray {r['machine']['ray']}",
                  f"- workload: {w['data']} {w['parent']} parent, fitness.steps={w['steps']}, {w['genomes']} genomes, "
                  f"{w['repeats']} repeats",
                  f"- niceness {r.get('niceness', '?')}; load before {r['load_before']}, after {r['load_after']}; "
                  f"ray.init {r['ray_init_s']} s", "",
                  "| evaluator | evals/s | seconds per repeat | start-up s | same objectives as local |",
                  "|---|---|---|---|---|"]
        for x in r["results"]:
            lines.append(f"| {x['evaluator']} | {x['evals_per_s']} | {', '.join(map(str, x['seconds']))} | "
                         f"{x.get('startup_s', '')} | {x.get('same_objectives_as_local', '(reference)')} |")
        if r.get("note"):
            lines += ["", f"Note: {r['note']}"]
        if "ratio_2_vs_1_workers" in r:
            lines += ["", f"2 workers / 1 worker: **{r['ratio_2_vs_1_workers']}x**"]
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--genomes", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "evoprune_bench_ray_parent"),
                    help="directory caching the trained parent between runs")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--fresh", action="store_true", help="replace earlier runs instead of appending")
    ap.add_argument("--note", default="", help="what else the machine was doing, saved with the run")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    entry = run(args)
    if args.note:
        entry["note"] = args.note
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_ray.json"
    runs = [] if args.fresh or not path.is_file() else json.loads(path.read_text())["runs"]
    runs.append(entry)
    path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    write_md(runs, out / "bench_ray.md")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
