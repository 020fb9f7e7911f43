"""Benchmark: `evoprune.search` on a Dataset of any length starts at once, in memory that does not grow with it.

The train split is a map-style Dataset whose items are made on demand from their index (16x16 grayscale
images, 10 classes), at several lengths (default 10,000, 1,000,000 and 100,000,000); validation is a fixed
512-item one. Each length runs in a fresh child process, which times

- `Fitness.from_model` (staging the fitness' rows by index, tracing the space, choosing the evaluator),
- its first evaluation (one genome's KD fine-tune and score), and
- a whole tiny `evoprune.search` (4 + 4 evaluations) into a temporary run directory,

and reports the process's peak resident memory (ru_maxrss) and how many items the search read from the
Dataset. The same through the CLI: `data.factory` returns the Dataset, the parent comes by import path with
its weights (no parent training); it times the whole `python -m evoprune search` and its peak memory.
Lengths interleave over repeats (the machine is shared).

    python experiments/bench_stream.py                     # 3 lengths, 2 repeats
    python experiments/bench_stream.py --lengths 10000 1000000 --repeat 3

Writes results/bench_stream.json and results/bench_stream.md (command, commit, torch, machine, date).
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

SETS = ["search.population=4", "search.offspring=4", "search.generations=1", "search.patience=0"]
VAL_LENGTH = 512


USER_MODULE = '''
import os

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class Generated(Dataset):
    """Items made from their index (nothing stored): a class-dependent pattern plus seeded noise; `targets`
    (torchvision's convention) only when asked for, as the CLI path reads labels from it."""

    def __init__(self, n, offset=0, targets=False):
        self.n, self.offset, self.reads = n, offset, 0
        if targets:
            self.targets = (np.arange(n, dtype=np.int64) + offset) % 10

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads += 1
        label = (i + self.offset) % 10
        gen = torch.Generator().manual_seed(i + self.offset)
        x = torch.randn(1, 16, 16, generator=gen) * 0.5
        x[0, label, :] += 2.0  # the class is a bright row
        return x, label


def build(classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


def make():
    n = int(os.environ["BENCH_STREAM_LENGTH"])
    return Generated(n, targets=True), Generated(VAL, offset=10**12, targets=True), \
        Generated(VAL, offset=2 * 10**12, targets=True)
'''


def _child(length: int) -> dict:
    """`evoprune.search` in Python on a Generated train split of `length` items (this process)."""
    import resource
    import tempfile

    import evoprune

    user = _user_module()
    model = user.build()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train, val = user.Generated(length), user.Generated(VAL_LENGTH, offset=10**12)
    cfg = evoprune.load_config(overrides=SETS)
    start = time.perf_counter()
    fitness = evoprune.Fitness.from_model(model, train, val, cfg)
    built = time.perf_counter() - start
    fitness([fitness.space.uniform(0.5)])
    first = time.perf_counter() - start
    reads_fitness = train.reads
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = evoprune.search(model, train, val, config=cfg, out=Path(tmp) / "run", progress=False)
        search = time.perf_counter() - start
        members = len(run.front)
    return {"length": length, "fitness_built_s": built, "first_evaluation_s": first, "search_s": search,
            "front_members": members, "train_items_read_by_fitness": reads_fitness,
            "train_items_read_in_all": train.reads, "evaluator": fitness.evaluator.kind,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_imports_mib": base / 1024}


def _child_cli(length: int) -> dict:
    """`python -m evoprune search` with `data.factory` returning a Generated train split of `length` items
    and the parent by import path with its weights (no parent training), in a child process."""
    import resource
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "benchuser.py").write_text(USER_MODULE.replace("VAL", str(VAL_LENGTH)))
        sys.path.insert(0, str(tmp))
        import benchuser

        torch.save(benchuser.build().state_dict(), tmp / "parent.pt")
        sets = SETS + ["data.name=python", "data.factory=benchuser:make", "parent.arch=benchuser:build",
                       f"parent.weights={tmp / 'parent.pt'}", "parent.trust_split=true"]
        env = {**os.environ, "BENCH_STREAM_LENGTH": str(length), "PYTHONPATH": str(tmp)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "evoprune", "search", "--out", str(tmp / "run"), "--quiet",
                               *[f"--set={o}" for o in sets]], capture_output=True, text=True, env=env, cwd=tmp)
        search = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
    return {"length": length, "search_s": search,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _user_module():
    import types

    module = types.ModuleType("benchuser")
    exec(USER_MODULE.replace("VAL", str(VAL_LENGTH)), module.__dict__)
    return module


def _cell(rows: list[dict], key: str, fmt: str) -> str:
    values = [r[key] for r in rows]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _markdown(doc: dict) -> str:
    prov = doc["provenance"]
    lines = ["# evoprune.search on a generated Dataset of growing length", "",
             f"`{prov['command']}` at commit {prov['commit']}, torch {prov['torch']}, {prov['machine']['cpu']} "
             f"({prov['machine']['cores']} cores), {prov['date']}.", f"Calibration: {prov['calibration']}", "",
             f"Train: a map-style Dataset of 16x16 images made on demand from their index; val: {VAL_LENGTH} items; "
             f"config {' '.join(SETS)}, other settings default. Each row: median over {doc['repeat']} fresh child "
             "processes (min-max), the lengths interleaved.", "",
             "**Python** (`Fitness.from_model`, then `evoprune.search`, in one process):", "",
             "| train length | Fitness built (s) | first evaluation done (s) | whole tiny search (s) | peak RSS (MiB) "
             "| train items read |", "|---|---|---|---|---|---|"]
    for length, rows in doc["python"].items():
        lines.append(f"| {int(length):,} | {_cell(rows, 'fitness_built_s', '.2f')} | "
                     f"{_cell(rows, 'first_evaluation_s', '.2f')} | {_cell(rows, 'search_s', '.1f')} | "
                     f"{_cell(rows, 'peak_rss_mib', '.0f')} | {rows[0]['train_items_read_in_all']:,} |")
    if doc["cli"]:
        lines += ["", "**CLI** (`python -m evoprune search` with `data.factory` returning the Dataset, with "
                  "`targets`, and the parent by import path with `parent.weights`: no parent training). It holds "
                  "the labels and one permutation of the train split (16 bytes per item):", "",
                  "| train length | whole tiny search, start-up included (s) | peak RSS (MiB) |", "|---|---|---|"]
        for length, rows in doc["cli"].items():
            lines.append(f"| {int(length):,} | {_cell(rows, 'search_s', '.1f')} | {_cell(rows, 'peak_rss_mib', '.0f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[10_000, 1_000_000, 100_000_000])
    ap.add_argument("--cli-lengths", type=int, nargs="*", default=[10_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        path, length = args.child.split(":")
        print(json.dumps((_child if path == "python" else _child_cli)(int(length))))
        return
    doc = {"repeat": args.repeat, "python": {str(n): [] for n in args.lengths},
           "cli": {str(n): [] for n in args.cli_lengths}}
    for r in range(args.repeat):
        for path in ("python", "cli"):
            for n in (args.lengths if path == "python" else args.cli_lengths):
                done = subprocess.run([sys.executable, __file__, "--child", f"{path}:{n}"], capture_output=True,
                                      text=True, cwd=ROOT)
                if done.returncode != 0:
                    sys.exit(f"{path} length {n} failed:\n{done.stderr}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                doc[path][str(n)].append(row)
                print(f"repeat {r} {path} length {n:,}: search {row['search_s']:.1f} s, peak RSS "
                      f"{row['peak_rss_mib']:.0f} MiB", flush=True)
    doc = {"provenance": provenance(), **doc}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_stream.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "bench_stream.md").write_text(_markdown(doc))
    print(_markdown(doc))


if __name__ == "__main__":
    main()
