"""Benchmark: every phase of evoprune on a quiet machine and on a busy one, under each thread policy.

A user's machine is never idle. OpenMP threads spin while they wait for a peer, and on a busy machine
the OS deschedules that peer: work that uses every core can then crawl. This runs each phase in a
fresh child process, quiet and with two busy processes in the background (`python -c 'while True:
pass'`, one per core of a 2-core machine), interleaved over repeats, under these policies:

- `evoprune`: what evoprune does: `import evoprune` samples the load for 0.1 s before torch loads
  and, when other processes keep the CPUs busy, sets OMP_WAIT_POLICY=PASSIVE (waiting threads
  sleep); torch keeps one thread per core; forked fitness workers (one per core plus one) and Ray
  workers run one thread each.
- `passive`: OMP_WAIT_POLICY=PASSIVE always.
- `spin`: OpenMP's default spin-then-sleep always (what evoprune did before).
- `one_thread`: as `evoprune`, but torch.set_num_threads(1) (parent training only).
- `one_per_core`: as `evoprune`, but one forked fitness worker per core, not one per core plus one.

    python experiments/bench_load.py                      # all phases, 3 repeats
    python experiments/bench_load.py --phases parent --repeat 5
    python experiments/bench_load.py --quick              # a smoke run

Writes results/bench_load.json and results/bench_load.md (command, commit, torch, machine, date).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from provenance import ROOT, provenance

PHASES = {  # name: (what it times, policies compared)
    "parent": ("2 epochs of the digits parent (simple_cnn, 8x8, 1078 images; after 1 warm-up epoch)",
               ("evoprune", "passive", "spin", "one_thread")),
    "parent_resnet20": ("1 epoch of a ResNet-20 parent on digits at 32x32 (after a warm-up epoch)",
                        ("evoprune", "passive", "spin", "one_thread")),
    "fitness": ("16 digits genomes evaluated by the default evaluator (forked workers, one per core plus one; "
                "after a warm-up evaluation of 2 others)", ("evoprune", "one_per_core")),
    "distill": ("1 epoch of final distillation of a half-width digits subnet (after a warm-up epoch)",
                ("evoprune", "passive", "spin")),
    "metrics": ("deployment metrics of the digits parent on its test split (latency: 20 timed runs)",
                ("evoprune", "passive", "spin")),
    "ray": ("16 digits genomes evaluated by 2 local Ray CPU workers (after a warm-up evaluation)", ("evoprune",)),
    "search": ("the embedded default search, end to end: `python -m evoprune search --out NEW_DIR --quiet` "
               "(start-up, parent training, search, plots)", ("evoprune",)),
}
DIGITS = ["parent.epochs=1", "parent.patience=0"]


# -- child: one phase, one policy; prints {"seconds": ..., "wait_policy": ...} ----------------------
def _child(phase: str, policy: str) -> float:
    if phase == "search":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "evoprune", "search", "--out", f"{tmp}/run", "--quiet"], check=True,
                           stdout=subprocess.DEVNULL, cwd=tmp)
            return time.perf_counter() - start
    if policy == "spin":
        import torch  # noqa: F401  - before evoprune, which then leaves OpenMP's policy alone
    import evoprune  # noqa: F401  - chooses the wait policy by the load, unless torch came first or it is set
    import torch
    from evoprune import build_fitness, load_config

    if policy == "one_thread":
        torch.set_num_threads(1)
    if phase in ("parent", "parent_resnet20"):
        from evoprune.data.task import load_task
        from evoprune.parent.train import build_parent, train_parent

        over = DIGITS + (["parent.arch=resnet20", "data.image_size=32"] if phase == "parent_resnet20" else [])
        cfg = load_config(overrides=over)
        data = load_task(cfg)
        torch.manual_seed(0)
        model = build_parent(cfg.parent, data.input_shape, data.n_classes)
        train_parent(model, data, 1, 0.05, 64, 0, progress=False)  # warm-up: oneDNN builds its kernels
        epochs = 2 if phase == "parent" else 1
        start = time.perf_counter()
        train_parent(model, data, epochs, 0.05, 64, 1, progress=False)
        return time.perf_counter() - start
    if phase in ("fitness", "ray"):
        import random

        from evoprune.evolve.population import initial_population

        extra = ["evaluator.backend=ray", "evaluator.workers=2"] if phase == "ray" else []
        if policy == "one_per_core":
            extra.append(f"evaluator.threads={os.cpu_count()}")
        fitness = build_fitness(load_config(overrides=DIGITS + extra), progress=False)
        genomes = [g for g, _ in initial_population(fitness.space, fitness.cfg.population, 18, random.Random(1))]
        fitness(genomes[:2])  # warm-up: forks the workers (or starts Ray's actors)
        start = time.perf_counter()
        fitness(genomes[2:])
        seconds = time.perf_counter() - start
        if phase == "ray":
            fitness.evaluator.close()
        return seconds
    if phase == "distill":
        from evoprune.deploy.distill import distill_model

        fitness = build_fitness(load_config(overrides=DIGITS), progress=False)
        student = fitness.subnet(fitness.space.uniform(0.5))
        cfg = load_config(overrides=DIGITS + ["distill.epochs=1"]).distill
        distill_model(student, fitness.parent, fitness.data, cfg, 0, torch.device("cpu"))  # warm-up
        start = time.perf_counter()
        distill_model(student, fitness.parent, fitness.data, cfg, 1, torch.device("cpu"))
        return time.perf_counter() - start
    if phase == "metrics":
        from evoprune.deploy.metrics import deployment_metrics

        fitness = build_fitness(load_config(overrides=DIGITS), progress=False)
        data = fitness.data
        deployment_metrics(fitness.parent, data.test_x, data.test_y, data.n_classes, runs=5)  # warm-up
        start = time.perf_counter()
        deployment_metrics(fitness.parent, data.test_x, data.test_y, data.n_classes, runs=20)
        return time.perf_counter() - start
    raise ValueError(f"unknown phase {phase!r}")


# -- parent: the schedule of child runs -------------------------------------------------------------
def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _run_child(phase: str, policy: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run([sys.executable, __file__, "--child", phase, "--policy", policy], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{phase}/{policy} failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["seconds"], out["wait_policy"]


def _markdown(doc: dict) -> str:
    p = doc["provenance"]
    lines = ["# Every phase quiet and on a busy machine, by thread policy", "",
             f"- command: `{p['command']}`", f"- commit {p['commit']}, torch {p['torch']}, Python {p['python']}",
             f"- machine: {p['machine']['cpu']}, {p['machine']['cores']} cores; {p['calibration']}",
             f"- date: {p['date']}; {doc['repeat']} interleaved repeats, medians in seconds (every run in the JSON)",
             f"- busy: {doc['busy']} background processes `python -c 'while True: pass'`", "",
             "busy / best quiet: the busy time against the fastest policy's quiet time (the goal: at most 2x);",
             "quiet cost: the quiet time against the fastest policy's quiet time (the goal: at most 1.1x).", "",
             "| phase | policy | quiet s | busy s | busy / own quiet | busy / best quiet | quiet cost |",
             "|---|---|---|---|---|---|---|"]
    for phase, rows in doc["results"].items():
        best = min(statistics.median(r["quiet"]) for r in rows.values())
        for policy, r in rows.items():
            q, b = statistics.median(r["quiet"]), statistics.median(r["busy"])
            lines.append(f"| {phase} | {policy} | {q:.2f} | {b:.2f} | {b / q:.2f}x | {b / best:.2f}x | {q / best:.2f}x |")
    lines += ["", "What each phase times:", ""] + [f"- {k}: {PHASES[k][0]}" for k in doc["results"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="background busy processes in the loaded runs")
    ap.add_argument("--quick", action="store_true", help="smoke run: parent and metrics, 1 repeat")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--policy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        seconds = _child(args.child, args.policy)
        print(json.dumps({"seconds": seconds, "wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default"}))
        return
    if args.quick:
        args.phases, args.repeat = "parent,metrics", 1
    phases = args.phases.split(",")
    prov = provenance()  # before the runs: the commit they measure, the calibration on a quiet machine
    results = {ph: {pol: {"quiet": [], "busy": [], "wait_policy": []} for pol in PHASES[ph][1]} for ph in phases}
    for rep in range(args.repeat):
        for load in ("quiet", "busy"):  # interleaved, so drifts of the shared machine hit both alike
            for phase in phases:
                for policy in PHASES[phase][1]:
                    busy = _busy(args.busy) if load == "busy" else []
                    try:
                        seconds, wait = _run_child(phase, policy)
                    finally:
                        for proc in busy:
                            proc.kill()
                            proc.wait()
                    results[phase][policy][load].append(seconds)
                    results[phase][policy]["wait_policy"].append(f"{load}: {wait}")
                    print(f"repeat {rep} {load:5s} {phase:16s} {policy:12s} {seconds:7.2f} s  (OpenMP wait: {wait})",
                          flush=True)
    doc = {"provenance": prov, "repeat": args.repeat, "busy": args.busy, "results": results,
           "phases": {ph: PHASES[ph][0] for ph in phases}}
    out = Path(args.out)
    name = "bench_load_quick" if args.quick else "bench_load"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{name}.md").write_text(_markdown(doc))
    print(_markdown(doc))


if __name__ == "__main__":
    main()
