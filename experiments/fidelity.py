"""How well does each fitness setting rank subnets? Proxy scores against the final fine-tuned accuracy.

About 40 genomes of the Fashion-MNIST ResNet-20 parent of compare.py (trained once, reused), spanning
5-80% of its MACs and every criterion: the picks of compare.py's seed-0 searches, each criterion's
uniform subnets, and importance-ranked subnets of random per-group widths. Each gets

  * the final KD fine-tune compare.py gives its picks (same recipe, epochs, data and seed; a final
    compare.py already ran for the same genome is reused) -> test accuracy on the 10,000 test images;
  * every fitness setting: KD fine-tune steps (0, 20, 40, 100) x adaptive-BN batches after it
    (0, 10, 20, 50), other learning rates and optimisers at 20 steps, and a zero-cost proxy (the
    student's KL divergence from the parent on the validation subset after adaptive BN), each scored
    on the first 500, 1,000 and 2,000 validation images. Each is evoprune's own recipe
    (`kd_finetune`, `recalibrate_bn`) on its staged task; its cost per genome is the measured time
    of its parts (fine-tune, recalibration, scoring) on one thread.

The report gives, per setting, the rank correlation with the final test accuracy over all genomes and
within size bins (pairs of genomes whose MACs differ by at most 10%, where size alone cannot rank
them), the accuracy the comparison's rule (best proxy at or under 10/25/50% of the MACs) would lose
against the best genome there, and what a two-stage screen (successive halving) would save.

    python experiments/fidelity.py                 # about an hour on 2 cores; resumes where it stopped
    python experiments/fidelity.py --report        # tables and figure from the units written
    python experiments/fidelity.py --config my.yaml --out results/fidelity-mine   # your own task
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from baselines import at_most, macs_ratio
from compare import COMMON, TASKS, final_unit
from fidelity_report import ZERO_COST, setting_name, write_report
from provenance import provenance

from evoprune import build_fitness, load_config
from evoprune.atomic import write_json
from evoprune.config import stream_seed
from evoprune.data.task import load_task
from evoprune.fitness.recipe import kd_finetune, recalibrate_bn
from evoprune.genome import Genome
from evoprune.metrics import logits_of

ROOT = Path(__file__).resolve().parents[1]
COMPARE = ROOT / "results" / "compare-fmnist"
STEPS = (0, 20, 40, 100)
ABN = (0, 10, 20, 50)
# (optimizer, lr) at 20 steps besides the default SGD 0.02
RECIPES = (("sgd", 0.02), ("sgd", 0.01), ("sgd", 0.05), ("adam", 0.001))
VAL_SIZES = (500, 1000, 2000)
FINAL_SEED, FINAL_EPOCHS, FINAL_SAMPLES = 0, 3, 10000  # compare.py's final fine-tune, seed 0
# The final's lr: 0.05 (distill.lr's default), the recipe results/fidelity-fmnist's finals were made with.
# compare.py's finals now run at 0.01, which gives the larger subnets 3-8 points back: how well each
# fitness setting predicts that final is still to be measured (a new --out, every final again).
FINAL_LR = 0.05
# The staged task holds enough batches for the longest setting (its validation subset is then the same
# for every setting).
STAGE = ["fitness.steps=100", "fitness.adaptive_bn=50", "fitness.val_samples=2000", "fitness.finetune_samples=2048"]


def choose_genomes(fitness, n_uniform: int, n_random: int, seed: int, with_picks: bool) -> list[dict]:
    """compare.py's seed-0 picks (`with_picks`: on its task), uniform subnets of every criterion and
    importance-ranked random-width subnets, at MACs targets spread evenly in log space over 5-80%
    (small subnets matter most)."""
    space = fitness.space
    out, seen = [], {space.full().key()}

    def add(genome: Genome, origin: str) -> None:
        if genome.key() not in seen:
            seen.add(genome.key())
            out.append({"key": genome.key(), "origin": origin, "genome": genome.to_json(),
                        "macs_ratio": macs_ratio(fitness, genome)})

    for path in sorted(COMPARE.glob("units/search-seed0-*.json")) if with_picks else []:
        unit = json.loads(path.read_text())
        for target, p in unit["picks"].items():
            if p is not None:
                add(Genome(p["genome"]), f"compare seed 0 {unit['method']} pick at {float(target):.0%}")
    criteria = space.criteria
    rng = random.Random(stream_seed(seed, "fidelity.genomes"))

    def targets(n: int) -> list[float]:
        return [0.05 * 16 ** ((i + rng.random()) / n) for i in range(n)]  # 5% .. 80%

    for i, target in enumerate(targets(n_uniform)):
        criterion = criteria[i % len(criteria)]
        add(at_most(fitness, lambda k, c=criterion: space.uniform(k, c), target), f"uniform {criterion}")
    for target in targets(n_random):
        criterion = rng.choice(criteria)
        factor = [rng.lognormvariate(0.0, 0.5) for _ in space.groups]
        least = min(factor)

        def make(scale: float, factor=factor, least=least, criterion=criterion) -> Genome:
            return space.from_keep_ratios([min(1.0, scale * f / least) for f in factor], criterion)  # 1: whole

        add(at_most(fitness, make, target), f"random widths {criterion}")
    return out


def proxy_unit(fitness, genome: Genome, teacher_val: torch.Tensor) -> dict:
    """Every setting's score of one genome, and the measured time of each part (one thread)."""
    task, parent = fitness.task, fitness.parent
    val_y = task.val_y.cpu()
    base = fitness.subnet(genome)
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}

    def scored(name: str, model) -> torch.Tensor:
        t0 = time.perf_counter()
        logits = logits_of(model, task.val_x)
        seconds["val"] = time.perf_counter() - t0
        correct = (logits.argmax(1) == val_y).float()
        scores[name] = [float(correct[:n].mean()) for n in VAL_SIZES]
        return logits

    for optimizer, lr in RECIPES:
        cfg = dataclasses.replace(task.cfg, optimizer=optimizer, lr=lr)
        for steps in STEPS if (optimizer, lr) == RECIPES[0] else (20,):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            _, finite = kd_finetune(model, task, parent, steps, cfg)
            seconds[f"ft {optimizer} {lr} {steps}"] = time.perf_counter() - t0
            for abn in ABN:
                if abn:
                    t0 = time.perf_counter()
                    recalibrate_bn(model, task, abn)  # batch 0 overwrites: the same as recalibrating afresh
                    seconds[f"abn {abn}"] = time.perf_counter() - t0
                name = setting_name(optimizer, lr, steps, abn)
                if not finite:
                    scores[name] = [0.0] * len(VAL_SIZES)
                    continue
                logits = scored(name, model)
                if steps == 0 and abn == ABN[-1] and optimizer == "sgd":
                    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_val, 1), log_target=True,
                                  reduction="batchmean")
                    scores[ZERO_COST] = [-float(kl)] * len(VAL_SIZES)
    return {"key": genome.key(), "scores": scores, "seconds": seconds, "provenance": provenance(calibrate=False)}


def reuse_final(args: argparse.Namespace, key: str) -> dict | None:
    """compare.py's final fine-tune of the same genome with the same recipe and seed, if it ran (its task only)."""
    path = COMPARE / "units" / f"final-seed{FINAL_SEED}-{key}.json"
    if args.config is not None:
        return None
    if not path.is_file():
        return None
    unit = json.loads(path.read_text())
    if (unit["epochs"], unit["samples"], unit["lr"]) != (FINAL_EPOCHS, FINAL_SAMPLES, FINAL_LR):
        return None
    return {**unit, "reused_from": str(path.relative_to(ROOT))}


def missing(units: Path) -> list[str]:
    """The unit files genomes.json calls for that are not written yet."""
    keys = [g["key"] for g in json.loads((units / "genomes.json").read_text())["genomes"]]
    return [name for k in keys for name in (f"proxy-{k}.json", f"final-{k}.json") if not (units / name).is_file()]


def task_settings(args: argparse.Namespace) -> dict:
    """The task benchmarked: compare.py's Fashion-MNIST ResNet-20 (its parent reused), or a user's config."""
    if args.config is None:
        overrides = TASKS["fmnist"] + COMMON + [f"parent.weights={COMPARE / 'parent' / 'parent.pt'}"] + args.set
    else:
        overrides = ["search.size_metric=macs"] + args.set
    return {"config": args.config, "overrides": overrides + STAGE + [f"seed={FINAL_SEED}"]}


def run_shard(args: argparse.Namespace, units: Path, shard: int, n_shards: int) -> None:
    torch.set_num_threads(1)  # one thread per shard: the shards fill the cores, and times are per thread
    task = task_settings(args)
    chosen = units / "genomes.json"
    cfg = load_config(task["config"], task["overrides"])
    data = load_task(cfg)
    parent_dir = args.parent_dir or (units.parent / "parent" if args.config else None)  # trained once, then reused
    fitness = build_fitness(cfg, run_dir=parent_dir, data=data, progress=shard == 0)
    if not chosen.is_file():
        if shard != 0:
            sys.exit("genomes.json is missing: run without --shard first")
        genomes = choose_genomes(fitness, args.uniform, args.random, FINAL_SEED, with_picks=args.config is None)
        write_json(chosen, {"task": task, "genomes": genomes, "provenance": provenance(calibrate=False)})
        return
    genomes = json.loads(chosen.read_text())["genomes"]
    teacher_val = logits_of(fitness.parent, fitness.task.val_x)
    for i, g in enumerate(genomes[shard::n_shards]):
        genome = Genome(g["genome"])
        path = units / f"proxy-{g['key']}.json"
        if not path.is_file():
            write_json(path, proxy_unit(fitness, genome, teacher_val))
        path = units / f"final-{g['key']}.json"
        if not path.is_file():
            write_json(path, reuse_final(args, g["key"])
                       or final_unit(fitness, data, genome, FINAL_SEED, FINAL_EPOCHS, FINAL_SAMPLES, FINAL_LR))
        final = json.loads(path.read_text())
        print(f"[shard {shard}] {i + 1}/{math.ceil((len(genomes) - shard) / n_shards)} {g['origin']:38s} MACs "
              f"{g['macs_ratio']:.3f} -> test {final['test_accuracy']:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uniform", type=int, default=12, help="uniform subnets (criteria in turn)")
    ap.add_argument("--random", type=int, default=15, help="importance-ranked subnets of random widths")
    ap.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    ap.add_argument("--shard", default=None, help="I/N: this process's share (set by --workers)")
    ap.add_argument("--config", default=None, help="your task's YAML config (default: compare.py's Fashion-MNIST "
                    "ResNet-20, parent reused)")
    ap.add_argument("--set", action="append", default=[], help="config override, a.b=value (repeatable)")
    ap.add_argument("--parent-dir", default=None, help="with --config: where its parent is trained once and reused")
    ap.add_argument("--out", default=str(ROOT / "results" / "fidelity-fmnist"))
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the units written")
    ap.add_argument("--no-calibration", action="store_true", help="skip timing the machine (tests)")
    args = ap.parse_args()
    out = Path(args.out)
    units = out / "units"
    units.mkdir(parents=True, exist_ok=True)
    chosen, task = units / "genomes.json", task_settings(args)
    if not args.report and chosen.is_file() and json.loads(chosen.read_text()).get("task", task) != task:
        sys.exit(f"{units} holds another task's units ({chosen}); choose another --out")
    if args.shard:
        shard, n = (int(s) for s in args.shard.split("/"))
        run_shard(args, units, shard, n)
        return
    if not args.report:
        if not (units / "genomes.json").is_file():
            run_shard(args, units, 0, 1)
        if not missing(units):  # every unit done: no shard needs to load the task again
            args.report = True
    if not args.report:
        here = [sys.executable, __file__, "--out", str(out), "--uniform", str(args.uniform), "--random", str(args.random),
                *(["--config", args.config] if args.config else []), *[f"--set={o}" for o in args.set],
                *(["--parent-dir", args.parent_dir] if args.parent_dir else [])]
        procs = [subprocess.Popen(here + ["--shard", f"{i}/{args.workers}"]) for i in range(args.workers)]
        if any(p.wait() for p in procs):
            sys.exit("a shard failed (see above); rerun to continue where it stopped")
    f = load_config().fitness
    write_report(out, units, provenance(calibrate=not args.no_calibration),
                 setting_name(f.optimizer, f.lr, f.steps, f.adaptive_bn))
    print(f"wrote {out}/fidelity.json, fidelity.md, fidelity.png", flush=True)


if __name__ == "__main__":
    main()
