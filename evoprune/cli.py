"""Command line: `search` and `report`; errors become one line and an exit code (2: bad input)."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .config import ConfigError, apply_overrides, config_from_dict, load_config, read_yaml

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
RESUME_OVERRIDABLE = ("search.generations", "search.max_evaluations")


class UsageError(Exception):
    """Bad command-line input that is not a config error (paths, flags)."""


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and ((path / "checkpoint.json").is_file()
                                                  or (path / "parent.json").is_file())


def _check_out_dir(out: Path, force: bool) -> None:
    """Never write into a directory that holds something else, or over a run, without --force."""
    if not out.exists() or force:
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if _is_run_dir(out):
        raise UsageError(f"--out {out} already holds an evoprune run; continue it with "
                         f"`search --resume {out}` or overwrite it with --force")
    if any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and is not an evoprune run; choose another directory or pass --force")


def _cmd_search(args: argparse.Namespace) -> int:
    from .fitness import build_fitness
    from .report import front_table
    from .search import Search

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume {run_dir}: not an evoprune run directory (no config.yaml)")
        if args.config:
            raise UsageError("--resume takes the run's own config; drop --config")
        for item in args.set:
            if item.split("=", 1)[0].strip() not in RESUME_OVERRIDABLE:
                raise UsageError(f"--resume accepts only --set {' / '.join(RESUME_OVERRIDABLE)} (got {item!r})")
        cfg = config_from_dict(apply_overrides(read_yaml(run_dir / "config.yaml"), args.set))
    else:
        cfg = load_config(args.config, args.set)
        run_dir = Path(args.out) if args.out else Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
        _check_out_dir(run_dir, args.force)
    progress = not args.quiet
    print(f"evoprune search -> {run_dir}", flush=True)
    fitness = build_fitness(cfg, run_dir, progress=progress)
    print(f"parent {cfg.parent.arch}: val acc {fitness.parent_accuracy:.4f}, {fitness.parent_n_params:,} params, "
          f"{fitness.parent_macs:,} MACs ({fitness.parent_meta.get('source')}); "
          f"{len(fitness.space.groups)} prunable groups", flush=True)
    search = Search(fitness, run_dir, progress=progress)
    try:
        search.run(resume=bool(args.resume))
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last completed generation is saved. Continue with:\n"
              f"  python -m evoprune search --resume {run_dir}", file=sys.stderr)
        return 130
    print(front_table(run_dir))
    print(f"written: {run_dir}/front.json, evaluations.csv, history.csv, pareto.png, hypervolume.png")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import front_table, write_plots

    run_dir = Path(args.run_dir)
    if not (run_dir / "front.json").is_file():
        raise UsageError(f"{run_dir} is not an evoprune run directory (no front.json)")
    print(front_table(run_dir))
    for path in write_plots(run_dir):
        print(f"wrote {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoprune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="evolutionary search for small accurate subnets")
    s.add_argument("--config", help="YAML config (default: the embedded digits task)")
    s.add_argument("--out", help="run directory (default: runs/search-<time>)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set search.generations=20 (repeatable)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    s.add_argument("--force", action="store_true", help="write into a non-empty --out")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_search)
    r = sub.add_parser("report", help="print the front of a run and write its plots")
    r.add_argument("run_dir")
    r.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"evoprune: config error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UsageError, FileNotFoundError) as exc:
        print(f"evoprune: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
