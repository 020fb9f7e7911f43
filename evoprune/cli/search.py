"""`search` and `train-parent`: run (or continue) a search into its run directory; train the parent once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evoprune.cli.checks import check_device, search_inputs
from evoprune.cli.errors import (EXIT_FAILED, EXIT_OK, UsageError, as_path, os_error, paragraph, shell_command,
                                 stop_code, stop_word)
from evoprune.config import ConfigError, config_from_dict, load_config, read_yaml, save_config
from evoprune.errors import RunFailed
from evoprune.run.files import (CONFIG, EVALUATIONS, FAILED_GENOME, FRONT_JSON, HISTORY, HYPERVOLUME_PLOT,
                                PARENT_META, PARENT_WEIGHTS, PARETO_PLOT)
from evoprune.run.writer import CheckpointError, RunWriter, pin_evaluator


def start_again_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that starts this run again from its beginning (allowed while no generation is saved)."""
    again = (["--config", args.config] if args.config else []) + [f"--set={s}" for s in args.set]
    return shell_command("search", *again, "--out", str(run_dir), *(["--force"] if args.force else []))


def how_to_go_on(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool) -> str:
    """How to continue a search that stopped: resume from its checkpoint, or start it again."""
    writer = RunWriter(run_dir)
    resumable = resuming
    if not resuming and writer.has_checkpoint():
        try:  # the checkpoint is this run's only once this run has written its config
            resumable = config_from_dict(read_yaml(run_dir / CONFIG)) == cfg
        except (ConfigError, OSError):
            resumable = False
    if resumable:
        more = [f"--set={s}" for s in args.set] if resuming else []
        return (f"every completed generation is saved; continue with: "
                f"{shell_command('search', '--resume', str(run_dir), *more)}")
    return f"no generation was saved yet; start again with: {start_again_command(args, run_dir)}"


def report_stop(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool, exc: BaseException) -> int:
    """One line on how to go on after Ctrl-C or SIGTERM, then exit code 130 or 143."""
    print(f"evoprune: {stop_word(exc)}; {how_to_go_on(args, run_dir, cfg, resuming)}", file=sys.stderr, flush=True)
    return stop_code(exc)


def report_failure(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool, exc: RunFailed) -> int:
    """A search that could not go on: one paragraph (cause, genome, what to try, how to go on), exit 1."""
    genome = getattr(exc, "genome", None)
    saved = ""
    if genome is not None:
        from evoprune.atomic import write_json

        try:
            write_json(run_dir / FAILED_GENOME, {"key": genome.key(), "genome": genome.to_json(), "error": str(exc)})
            saved = f" The genome is saved in {run_dir / FAILED_GENOME}."
        except OSError:
            pass
    go_on = how_to_go_on(args, run_dir, cfg, resuming)
    print(paragraph(f"evoprune: the search stopped: {exc}.{saved} {go_on[0].upper()}{go_on[1:]}"),
          file=sys.stderr, flush=True)
    return EXIT_FAILED


def cmd_search(args: argparse.Namespace) -> int:
    try:
        run_dir, cfg, checkpoint, data = search_inputs(args)
    except OSError as exc:  # a path the system cannot even look at (name too long, no permission...)
        raise UsageError(os_error(exc)) from None
    resuming = bool(checkpoint)

    from evoprune import cpu_load
    from evoprune.fitness import build_fitness
    from evoprune.run.report import front_table
    from evoprune.run.search import RunDirSearch

    progress = not args.quiet
    print(f"evoprune search -> {run_dir}", flush=True)
    if cpu_load.chosen:
        print(cpu_load.chosen, flush=True)
    if args.resume is not None and not resuming:
        print(f"no generation of {run_dir} was saved before it stopped: starting it again from its {CONFIG}",
              flush=True)
    try:
        run_cfg = pin_evaluator(cfg, checkpoint.get("evaluator")) if resuming else cfg
        fitness = build_fitness(run_cfg, run_dir, progress=progress, data=data)
        print(f"parent {cfg.parent.arch}: val acc {fitness.parent_accuracy:.4f}, {fitness.parent_n_params:,} params, "
              f"{fitness.parent_macs:,} MACs ({fitness.parent_meta.get('source')}); "
              f"{len(fitness.space.groups)} prunable groups", flush=True)
        where = getattr(fitness.evaluator, "workers", "")  # e.g. "2 forked processes" on a CPU
        print(f"evaluator: {fitness.evaluator.kind}{', ' + where if where else ''} "
              f"({fitness.evaluator_info['reason']})", flush=True)
        search = RunDirSearch(fitness, run_dir, progress=progress)
        if resuming:
            search.writer.clean()  # temporary files of a killed write
            if args.set:  # the new budget belongs to the run from now on (a later plain resume keeps it)
                save_config(cfg, run_dir / CONFIG)
        state = search.run(resume=resuming)
    except KeyboardInterrupt as exc:
        return report_stop(args, run_dir, cfg, resuming, exc)
    except RunFailed as exc:
        return report_failure(args, run_dir, cfg, resuming, exc)
    except CheckpointError as exc:  # checked up front; only a checkpoint damaged since then lands here
        raise UsageError(str(exc)) from None
    print(front_table(run_dir))
    regressed = sum(r.objectives.status == "regressed" for r in state.records)
    if regressed:
        print(f"{regressed} of {len(state.records)} fine-tunes ended below their subnet's score before them (after "
              f"adaptive BN): status `regressed` in {EVALUATIONS}, with both scores; a lower fitness.lr may suit "
              f"this task (experiments/fidelity.py measures it)")
    print(f"written: {run_dir}/{FRONT_JSON}, {EVALUATIONS}, {HISTORY}, {PARETO_PLOT}, {HYPERVOLUME_PLOT}")
    return EXIT_OK


def cmd_train_parent(args: argparse.Namespace) -> int:
    """Transfer-learn the parent once into --out (parent.pt, parent.json); `search --out` reuses it."""
    try:
        cfg = load_config(as_path(args.config, "--config") if args.config is not None else None, args.set)
        out = as_path(args.out, "--out")
        if cfg.parent.weights:
            raise UsageError("train-parent: parent.weights is set, so there is nothing to train; drop it")
        check_device(cfg)
        from evoprune.parent.train import parent_dir_problem, train_parent_into

        problem = parent_dir_problem(out, cfg, args.force)
    except OSError as exc:
        raise UsageError(os_error(exc)) from None
    if problem:
        raise UsageError(problem)

    print(f"evoprune train-parent {cfg.parent.arch} on {cfg.data.name} -> {out}", flush=True)
    try:
        model, meta, data = train_parent_into(cfg, out, force=args.force, progress=not args.quiet)
    except KeyboardInterrupt as exc:
        print(f"evoprune: {stop_word(exc)}; no parent saved", file=sys.stderr, flush=True)
        return stop_code(exc)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parent {cfg.parent.arch} ({meta['source']}): val acc {meta['val_accuracy']:.4f}, {n_params:,} params, "
          f"data {data.describe()}", flush=True)
    print(f"written: {out}/{PARENT_WEIGHTS}, {PARENT_META}; use it with `search --out {out}` (same config) or "
          f"parent.weights={out}/{PARENT_WEIGHTS}", flush=True)
    return EXIT_OK
