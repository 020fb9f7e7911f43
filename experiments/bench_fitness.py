"""Benchmark: fitness evaluation three ways (naive loop, evoprune sequential, evoprune batched) + auto.

Same genomes, same fine-tune budget, in one process, so the ratios are comparable on a noisy machine.

    python experiments/bench_fitness.py                    # ResNet-20 @32x32 and digits, P = 8, 16, 32
    python experiments/bench_fitness.py --device cuda      # on a GPU
    python experiments/bench_fitness.py --quick            # a smoke run (P = 4, 2 steps)

Writes results/bench_fitness.json and results/bench_fitness.md (command, machine, date).
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import random
import dataclasses
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from provenance import calibration, git_commit

from evoprune import load_config
from evoprune.data.task import TaskData, load_data
from evoprune.fitness.losses import hinton_kd
from evoprune.fitness.evaluators import BatchedEvaluator, SequentialEvaluator, choose_evaluator
from evoprune.fitness.facade import Fitness
from evoprune.pruning.importance import build_space
from evoprune.metrics import count_macs
from evoprune.parent.models import build_model
from evoprune.parent.train import train_parent
from evoprune.evolve.population import initial_population
from evoprune.pruning.materialise import materialise

ROOT = Path(__file__).resolve().parents[1]


class PeakRSS:
    """Peak memory growth during a call, sampled every 2 ms: CUDA max allocated, or on a CPU the growth
    of the resident set of this process plus that of each forked worker since it was first seen (at
    the start, or within ms of its fork): its own allocations, the pages it un-shared and the shared
    library pages it touched."""

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def _rss(pid: int | str = "self") -> int:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (FileNotFoundError, ProcessLookupError):
            return 0

    @staticmethod
    def _children() -> list[int]:
        pids: list[int] = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as fh:
                    pids += [int(p) for p in fh.read().split()]
            except FileNotFoundError:
                continue
        return pids

    def _growth(self) -> int:
        total = self._rss() - self.base
        for pid in self._children():
            rss = self._rss(pid)
            total += rss - self.child_base.setdefault(pid, rss)
        return total

    def __enter__(self) -> "PeakRSS":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self.peak, self._stop = self._rss(), 0, False
            self.child_base = {pid: self._rss(pid) for pid in self._children()}
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._growth())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._thread.join()
            self.bytes = self.peak


def dense_matmul_flops(device: torch.device, n: int = 1024, reps: int = 20, trials: int = 5) -> float:
    """The machine's dense float32 matmul rate (FLOP/s, best of `trials`), the yardstick for achieved FLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def naive_loop(fitness: Fitness, genomes: list) -> None:
    """What the source projects did: copy + prune each individual, a DataLoader, the teacher every step."""
    cfg = fitness.cfg.fitness
    teacher = fitness.parent
    loader = DataLoader(TensorDataset(fitness.task.ft_x.cpu(), fitness.task.ft_y.cpu()), batch_size=cfg.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(fitness.task.val_x.cpu(), fitness.task.val_y.cpu()), batch_size=256)
    for g in genomes:
        model = materialise(teacher, g, fitness.example_input)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        model.train()
        for _, (x, y) in zip(range(cfg.steps), itertools.cycle(loader)):
            x, y = x.to(fitness.device), y.to(fitness.device)
            with torch.no_grad():
                t = teacher(x)
            loss = hinton_kd(model(x), t, y, cfg.temperature, cfg.alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((model(x.to(fitness.device)).argmax(1).cpu() == y).sum())
        count_macs(model, fitness.example_input)


def work_flops(fitness: Fitness, genomes: list) -> float:
    """Useful FLOPs of the evaluation: 3x forward MACs for each training sample, 1x for validation."""
    cfg = fitness.cfg.fitness
    total = 0.0
    for g in genomes:
        macs = count_macs(materialise(fitness.parent, g, fitness.example_input), fitness.example_input)
        total += 2 * macs * (3 * cfg.steps * cfg.batch_size + len(fitness.task.val_y))
    return total


def make_task(task: str, device: str, steps: int, batch: int, overrides: list[str] = ()):
    """(Fitness, config) for 'resnet20' (random 32x32 data, untrained) or 'digits' (the embedded task)."""
    over = [f"fitness.steps={steps}", f"fitness.batch_size={batch}", f"fitness.device={device}",
            "evaluator.kind=sequential", "fitness.finetune_samples=512", "fitness.val_samples=256", *overrides]
    if task == "digits":
        cfg = load_config(overrides=over + ["parent.epochs=20"])
        data = load_data(cfg.data, cfg.seed)
        parent = build_model("simple_cnn", data.n_classes, 1, None)
        train_parent(parent, data, cfg.parent.epochs, cfg.parent.lr, cfg.parent.batch_size, cfg.seed, False)
    else:
        cfg = load_config(overrides=over + ["parent.arch=resnet20"])
        g = torch.Generator().manual_seed(0)
        xs = torch.randn(1024, 3, 32, 32, generator=g)
        ys = torch.randint(0, 10, (1024,), generator=g)
        data = TaskData("random32", xs[:640], ys[:640], xs[640:896], ys[640:896], xs[896:], ys[896:], 10)
        parent = build_model("resnet20", 10, 3, None)
    parent.eval()
    space = build_space(parent, data.example_input(), cfg.space, cfg.population.criteria,
                        data.train_x[:128], data.train_y[:128])
    return Fitness(cfg, data, parent, space), cfg


def timed(fn, device: torch.device) -> tuple[float, int]:
    with PeakRSS(device) as mem:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    return seconds, mem.bytes


def _choose_auto(fitness: Fitness, row: dict):
    settings = dataclasses.replace(fitness.cfg.evaluator, kind="auto")  # the config is left as make_task set it
    evaluator, info = choose_evaluator(fitness.task, fitness.parent, fitness.space, settings)
    row.update(auto_kind=info["kind"], auto_reason=info["reason"])
    return evaluator


def bench(task: str, device: str, sizes: list[int], steps: int, batch: int, peak: float,
          repeat: int, overrides: list[str]) -> list[dict]:
    fitness, cfg = make_task(task, device, steps, batch, overrides)
    rows = []
    for P in sizes:
        genomes = [g for g, _ in initial_population(fitness.space, cfg.population, P, random.Random(P))]
        flops = work_flops(fitness, genomes)
        row = {"task": task, "device": str(fitness.device), "population": P, "steps": steps, "batch": batch}
        # Evaluators are made once per row, as a search makes them once per run: CPU workers are forked
        # on the first call (inside the first timed repeat) and reused. Choosing auto's evaluator (on
        # CUDA: the batched form's proof) is timed separately.
        sequential, batched = (SequentialEvaluator(fitness.task, fitness.parent, fitness.cfg.evaluator.threads,
                                                   fitness.cfg.evaluator.pool),
                               BatchedEvaluator(fitness.task, fitness.parent, fitness.space))
        t = time.perf_counter()
        auto = _choose_auto(fitness, row)
        row["auto_choose_s"] = time.perf_counter() - t
        runs = {
            "naive": lambda: naive_loop(fitness, genomes),
            "sequential": lambda: sequential.evaluate(genomes),
            "batched": lambda: batched.evaluate(genomes),
            "auto": lambda: auto.evaluate(genomes),
        }
        # Interleaved repeats, median per method: this machine is shared and noisy.
        times: dict[str, list[float]] = {name: [] for name in runs}
        mems: dict[str, list[int]] = {name: [] for name in runs}
        for _ in range(repeat):
            for name, fn in runs.items():
                seconds, mem = timed(fn, fitness.device)
                times[name].append(seconds)
                mems[name].append(mem)
        for name in runs:
            seconds = statistics.median(times[name])
            row[f"{name}_ips"] = P / seconds
            row[f"{name}_ips_runs"] = [P / t for t in times[name]]
            row[f"{name}_peak_mb"] = max(mems[name]) / 2 ** 20
            row[f"{name}_gflops"] = flops / seconds / 1e9
            print(f"  {task} P={P:3d} {name:10s} {P / seconds:8.2f} ind/s (median of {repeat})  "
                  f"peak {max(mems[name]) / 2**20:7.1f} MB", flush=True)
        for name in ("sequential", "batched", "auto"):
            row[f"{name}_vs_naive"] = row[f"{name}_ips"] / row["naive_ips"]
        row["dense_matmul_gflops"] = peak / 1e9
        row["best_fraction_of_matmul_peak"] = max(row[f"{n}_gflops"] for n in ("naive", "sequential", "batched")) / (peak / 1e9)
        rows.append(row)
    return rows


def machine(device: torch.device) -> dict:
    info = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_markdown(entries: list[dict], path: Path) -> None:
    lines = ["# Fitness evaluation benchmark", ""]
    for cmd, date, mach, commit, cal in sorted({(e["command"], e["date"], json.dumps(e["machine"]), e.get("commit"),
                                                 e.get("calibration")) for e in entries}):
        lines += [f"- `{cmd}` on {date}, commit {commit or 'not recorded'}: {mach}; {cal or 'no calibration recorded'}"]
    lines += ["", "Individuals per second (higher is better) and the ratio to the naive loop.", "",
             "| task | device | P | naive | sequential | batched | auto (kind) | seq/naive | batched/naive | auto/naive | peak MB naive/seq/batched | GFLOP/s best (matmul peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(entries, key=lambda e: (e["task"] != "resnet20", e["task"], e["device"], e["population"])):
        lines.append(
            f"| {r['task']} | {r['device']} | {r['population']} | {r['naive_ips']:.2f} | {r['sequential_ips']:.2f} | "
            f"{r['batched_ips']:.2f} | {r['auto_ips']:.2f} ({r['auto_kind']}) | {r['sequential_vs_naive']:.2f}x | "
            f"{r['batched_vs_naive']:.2f}x | {r['auto_vs_naive']:.2f}x | {r['naive_peak_mb']:.0f}/{r['sequential_peak_mb']:.0f}/"
            f"{r['batched_peak_mb']:.0f} | {max(r['naive_gflops'], r['sequential_gflops'], r['batched_gflops']):.1f} "
            f"({r['dense_matmul_gflops']:.0f}) |")
    lines += ["", "Each figure is the median of interleaved repeats (all runs in the JSON). Each evaluator is made",
              "once per row, as in a search, so the first repeat includes forking the CPU workers; choosing auto's",
              "evaluator (on CUDA, the batched form's start-up proof) is timed apart, as auto_choose_s.",
              "Peak memory: CUDA max allocated, or on a CPU the sampled growth of the resident set of the process and its forked workers (coarse: freed memory",
              "is reused, and the workers' first call includes the pages they un-share)."]
    notes = sorted({e["dense_matmul_note"] for e in entries if e.get("dense_matmul_note")})
    lines += [f"Matmul peak: {n}." for n in notes]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tasks", default="resnet20,digits")
    ap.add_argument("--sizes", default="8,16,32")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the median is reported")
    ap.add_argument("--quick", action="store_true", help="smoke run: P = 4, 2 steps, 1 repeat")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for evoprune's evaluators (repeatable), e.g. evaluator.pool=threads")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.steps, args.repeat = "4", 2, 1
    device = torch.device(args.device)
    peak = dense_matmul_flops(device)
    results = []
    for task in args.tasks.split(","):
        results += bench(task, args.device, [int(s) for s in args.sizes.split(",")], args.steps, args.batch, peak,
                         args.repeat, args.set)
    run = {"command": "python " + " ".join(sys.argv), "date": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": machine(device), "commit": git_commit(), "calibration": calibration()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_fitness_quick" if args.quick else "bench_fitness"
    # One entry per (task, device, P), each with its own command/machine/date; a run on another
    # device (a GPU) replaces only its own entries, so CPU and GPU figures sit side by side.
    path = out / f"{name}.json"
    entries = json.loads(path.read_text())["results"] if path.is_file() else []
    fresh = {(r["task"], r["device"], r["population"]) for r in results}
    entries = [e for e in entries if (e["task"], e["device"], e["population"]) not in fresh]
    entries += [{**r, **run} for r in results]
    path.write_text(json.dumps({"results": entries}, indent=1) + "\n")
    write_markdown(entries, out / f"{name}.md")
    print(f"wrote {path} and {name}.md")


if __name__ == "__main__":
    main()
