"""Command line: search, report, train-parent, distill, export; errors become one line and an exit code (2: bad input).

Every check of the user's input (flags, paths, config, parent weights, the checkpoint to resume)
runs before any work starts, so bad input never creates, changes or damages a run directory.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .config import (ConfigError, apply_overrides, config_from_dict, load_config, parse_override, read_yaml,
                     save_config, short)
from .rundir import CheckpointError, RunWriter

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
RESUME_OVERRIDABLE = ("search.generations", "search.max_evaluations")
# May differ between config.yaml and a checkpoint: the resume budget, and `evaluator.kind`, which a
# resume replaces by the evaluator the run actually used (see _pin_evaluator).
RESUME_MAY_DIFFER = RESUME_OVERRIDABLE + ("evaluator.kind",)
RUN_MARKERS = ("config.yaml", "checkpoint.json", "checkpoint.prev.json", "parent.json")


class UsageError(Exception):
    """Bad command-line input that is not a config error (paths, flags)."""


def _one_line(text: object, limit: int = 1000) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _path(text: str, flag: str) -> Path:
    if not text or "\0" in text:
        raise UsageError(f"{flag}: expected a path, got {short(text)}")
    return Path(text)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _command(*parts: str) -> str:
    return " ".join(shlex.quote(p) for p in ("python", "-m", "evoprune", *parts))


# -- checks (no side effects) -----------------------------------------------------------------
def _is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_MARKERS)


def _check_out_dir(out: Path, force: bool) -> None:
    """Never write into a file, a directory that holds something else, or over a run, without --force."""
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        base = out
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise UsageError(f"--out {out}: {base} is not a directory")
        if not os.access(base, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: {base} is not writable")
        if not out.exists() or force:
            return
        from .parent import holds_only_parent

        if holds_only_parent(out):  # made by `train-parent`: a search reuses it (checked in _checks)
            return
        if _is_run_dir(out):
            raise UsageError(f"--out {out} already holds an evoprune run; continue it with "
                             f"`search --resume {out}` or start it over with --force")
        if any(out.iterdir()):
            raise UsageError(f"--out {out} is not empty and is not an evoprune run; "
                             f"choose another directory or pass --force")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _check_same_config(run_dir: Path, cfg_dict: dict[str, Any], saved: Any) -> None:
    """A resume must continue the very run: config.yaml may differ only in the resumable keys."""
    if not isinstance(saved, dict):
        return  # a checkpoint written before configs were stored in it
    now, then = _flatten(cfg_dict), _flatten(saved)
    changed = [k for k in then if k in now and k not in RESUME_MAY_DIFFER and now[k] != then[k]]
    if changed:
        k = changed[0]
        raise UsageError(f"--resume {run_dir}: config.yaml no longer matches the run's checkpoint "
                         f"({k}: {short(then[k])} in the checkpoint, {short(now[k])} in config.yaml"
                         f"{f', and {len(changed) - 1} more' if len(changed) > 1 else ''}); "
                         f"restore it, or start a new run")


def _pin_evaluator(cfg: Any, used: Any) -> Any:
    """The config with the evaluator the checkpointed run used, if recorded.

    The batched and sequential evaluators agree only to float rounding, so a resume that chose
    differently from the run it continues (`evaluator.kind: auto` decides by the device, and the
    rule may change between versions) would not continue it exactly. The recorded kind is reused.
    """
    section = getattr(cfg, "evaluator", None)
    if not isinstance(used, str) or section is None or getattr(section, "kind", None) == used:
        return cfg
    try:
        return config_from_dict(apply_overrides(cfg.to_dict(), [f"evaluator.kind={used}"]))
    except ConfigError:  # an evaluator this version does not know: let the config decide
        return cfg


def _check_device(cfg: Any) -> None:
    if cfg.fitness.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("fitness.device", "'cuda' but no CUDA device is available (use cpu or auto)")


def _check_parent_weights(cfg: Any) -> None:
    """parent.weights must be a state_dict that loads into the configured parent (checked up front)."""
    weights = cfg.parent.weights
    if not weights:
        return
    if "\0" in weights:
        raise ConfigError("parent.weights", f"expected a file path, got {short(weights)}")
    p = Path(weights)
    try:
        if p.is_dir():
            raise ConfigError("parent.weights", f"{p} is a directory, not a state_dict file")
        if not p.is_file():
            raise ConfigError("parent.weights", f"file not found: {p}")
    except OSError as exc:
        raise ConfigError("parent.weights", _os_error(exc)) from None
    import torch

    from .data import load_data
    from .parent import build_parent, load_state_dict_file, parent_channels

    # Only this file is read in the two `try`s below: whatever fails there, the file is unusable.
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("parent.weights", f"{p} is not a PyTorch state_dict file "
                          f"({exc.__class__.__name__}: {_one_line(exc, 120)})") from None
    if not isinstance(state, dict):
        raise ConfigError("parent.weights", f"{p} holds a {type(state).__name__}, not a state_dict")
    data = load_data(cfg.data, cfg.seed, channels=parent_channels(cfg))
    model = build_parent(cfg, data.input_shape, data.n_classes)
    try:
        load_state_dict_file(model, p)
    except ValueError as exc:  # its own one-line account of missing / unexpected keys
        raise ConfigError("parent.weights", _one_line(exc, 300)) from None
    except Exception as exc:  # e.g. RuntimeError: size mismatch
        width = cfg.parent.width if cfg.parent.width is not None else "default"
        raise ConfigError("parent.weights", f"{p} does not fit parent.arch={cfg.parent.arch} (width {width}): "
                          f"{_one_line(exc, 200)}") from None


def _resume_config(args: argparse.Namespace) -> tuple[Path, Any, dict[str, Any]]:
    """The run directory, its config (with the allowed overrides) and its checkpoint, after every check."""
    run_dir = _path(args.resume, "--resume")
    if args.config:
        raise UsageError("--resume continues the run with its own config; drop --config")
    if args.out:
        raise UsageError("--resume writes into the run's own directory; drop --out")
    if args.force:
        raise UsageError("--force does not apply to --resume")
    for item in args.set:
        key = ".".join(parse_override(item)[0])
        if key not in RESUME_OVERRIDABLE:
            raise UsageError(f"--resume accepts only --set {' / '.join(RESUME_OVERRIDABLE)} (got {short(item)})")
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such directory")
    writer = RunWriter(run_dir)
    has_config, has_checkpoint = (run_dir / "config.yaml").is_file(), writer.has_checkpoint()
    if has_checkpoint and not has_config:
        raise UsageError(f"--resume {run_dir}: config.yaml is missing; a resume needs the run's own config")
    if not has_checkpoint:
        if not _is_run_dir(run_dir):
            raise UsageError(f"--resume {run_dir}: not an evoprune run directory (no config.yaml and checkpoint)")
        if has_config:
            how = f"`{_command('search', '--config', str(run_dir / 'config.yaml'), '--out', str(run_dir), '--force')}`"
        else:
            how = f"its original --config / --set and `--out {run_dir} --force`"
        raise UsageError(f"--resume {run_dir}: the run stopped before its first generation was saved, so there "
                         f"is nothing to resume; start it again with {how} (a trained parent is reused)")
    cfg = config_from_dict(apply_overrides(read_yaml(run_dir / "config.yaml"), args.set))
    _, doc, _ = writer.load_checkpoint()  # CheckpointError when no checkpoint is usable
    _check_same_config(run_dir, cfg.to_dict(), doc.get("config"))
    return run_dir, cfg, doc


def _interrupted(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool) -> int:
    """One line on how to go on after Ctrl-C, then exit code 130."""
    writer = RunWriter(run_dir)
    resumable = resuming
    if not resuming and writer.has_checkpoint():
        try:  # the checkpoint is this run's only once this run has written its config
            resumable = config_from_dict(read_yaml(run_dir / "config.yaml")) == cfg
        except (ConfigError, OSError):
            resumable = False
    if resumable:
        more = [f"--set={s}" for s in args.set] if resuming else []
        print(f"evoprune: interrupted; every completed generation is saved; continue with: "
              f"{_command('search', '--resume', str(run_dir), *more)}", file=sys.stderr, flush=True)
    else:
        again = (["--config", args.config] if args.config else []) + [f"--set={s}" for s in args.set]
        print(f"evoprune: interrupted before the first generation was saved; start again with: "
              f"{_command('search', *again, '--out', str(run_dir), '--force')}", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


# -- commands -----------------------------------------------------------------------------------
def _checks(args: argparse.Namespace) -> tuple[Path, Any, dict[str, Any]]:
    """Every check of a search's input, before any work: run directory, config, checkpoint to resume."""
    if args.resume is not None:
        run_dir, cfg, checkpoint = _resume_config(args)
    else:
        checkpoint = {}
        cfg = load_config(_path(args.config, "--config") if args.config is not None else None, args.set)
        run_dir = _path(args.out, "--out") if args.out is not None else \
            Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
        _check_out_dir(run_dir, args.force)
        _check_parent_dir(run_dir, cfg, args.force)
    _check_device(cfg)
    _check_parent_weights(cfg)
    _check_feature_layers(cfg, search=True)
    return run_dir, cfg, checkpoint


def _cmd_search(args: argparse.Namespace) -> int:
    resuming = args.resume is not None
    try:
        run_dir, cfg, checkpoint = _checks(args)
    except OSError as exc:  # a path the system cannot even look at (name too long, no permission...)
        raise UsageError(_os_error(exc)) from None

    from .fitness import build_fitness
    from .report import front_table
    from .search import Search

    progress = not args.quiet
    print(f"evoprune search -> {run_dir}", flush=True)
    try:
        fitness = build_fitness(_pin_evaluator(cfg, checkpoint.get("evaluator")) if resuming else cfg, run_dir,
                                progress=progress)
        print(f"parent {cfg.parent.arch}: val acc {fitness.parent_accuracy:.4f}, {fitness.parent_n_params:,} params, "
              f"{fitness.parent_macs:,} MACs ({fitness.parent_meta.get('source')}); "
              f"{len(fitness.space.groups)} prunable groups", flush=True)
        print(f"evaluator: {fitness.evaluator.kind} ({fitness.evaluator_info['reason']})", flush=True)
        writer = RunWriter(run_dir)
        if resuming:
            writer.clean()  # temporary files of a killed write
            if args.set:  # the new budget belongs to the run from now on (a later plain resume keeps it)
                save_config(cfg, run_dir / "config.yaml")
        Search(fitness, run_dir, progress=progress).run(resume=resuming)
    except KeyboardInterrupt:
        return _interrupted(args, run_dir, cfg, resuming)
    print(front_table(run_dir))
    print(f"written: {run_dir}/front.json, evaluations.csv, history.csv, pareto.png, hypervolume.png")
    return EXIT_OK


def _check_parent_dir(out: Path, cfg: Any, force: bool) -> None:
    """A `train-parent` directory as --out: its parent must be the one this config asks for."""
    from .parent import holds_only_parent, parent_dir_problem

    problem = parent_dir_problem(out, cfg, force) if holds_only_parent(out) else None
    if problem:
        raise UsageError(problem)


def _cmd_train_parent(args: argparse.Namespace) -> int:
    """Transfer-learn the parent once into --out (parent.pt, parent.json); `search --out` reuses it."""
    try:
        cfg = load_config(_path(args.config, "--config") if args.config is not None else None, args.set)
        out = _path(args.out, "--out")
        if cfg.parent.weights:
            raise UsageError("train-parent: parent.weights is set, so there is nothing to train; drop it")
        _check_device(cfg)
        from .parent import parent_dir_problem, train_parent_into

        problem = parent_dir_problem(out, cfg, args.force)
    except OSError as exc:
        raise UsageError(_os_error(exc)) from None
    if problem:
        raise UsageError(problem)

    print(f"evoprune train-parent {cfg.parent.arch} on {cfg.data.name} -> {out}", flush=True)
    try:
        model, meta, data = train_parent_into(cfg, out, force=args.force, progress=not args.quiet)
    except KeyboardInterrupt:
        print("evoprune: interrupted; no parent saved", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parent {cfg.parent.arch} ({meta['source']}): val acc {meta['val_accuracy']:.4f}, {n_params:,} params, "
          f"data {data.describe()}", flush=True)
    print(f"written: {out}/parent.pt, parent.json; use it with `search --out {out}` (same config) or "
          f"parent.weights={out}/parent.pt", flush=True)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import front_table, write_plots

    run_dir = _path(args.run_dir, "report")
    try:
        is_run = (run_dir / "front.json").is_file()
    except OSError as exc:
        raise UsageError(_os_error(exc)) from None
    if not is_run:
        raise UsageError(f"{run_dir} is not an evoprune run directory (no front.json)")
    try:
        table = front_table(run_dir)
        paths = write_plots(run_dir)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # reading the run's files
        raise UsageError(f"{run_dir}: damaged run files ({exc.__class__.__name__}: {_one_line(exc, 120)}); "
                         f"`search --resume {run_dir}` rewrites them") from None
    print(table)
    for path in paths:
        print(f"wrote {path}")
    if getattr(args, "metrics", False):
        from .deploy import front_metrics, metrics_table

        run = _load_run_arg(args.run_dir, "report")
        for k in args.pick or []:
            _check_pick(run, k, "--pick")
        print(metrics_table(front_metrics(str(run_dir), args.pick or None, runs=args.runs)))
        print(f"wrote {run_dir / 'metrics.json'}")
    return EXIT_OK


# -- final distillation and export (evoprune.final, evoprune.export) ------------------------------
def _load_run_arg(text: str, flag: str) -> Any:
    from .run import load_run

    run_dir = _path(text, flag)
    try:
        return load_run(run_dir)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UsageError(_os_error(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{run_dir}: damaged run files ({exc.__class__.__name__}: {_one_line(exc, 120)})") from None


def _check_pick(run: Any, k: int | None, flag: str) -> None:
    if k is not None and not 0 <= k < len(run.front):
        raise UsageError(f"{flag} {k}: the front of {run.dir} has members 0..{len(run.front) - 1}")


def _check_feature_layers(cfg: Any, search: bool) -> None:
    """Configured feature layers (of the search's or the final KD loss) must be modules of the parent,
    and so of every subnet. Module names do not depend on the input size or the classes."""
    from .distill import FEATURE_LOSSES
    from .parent import build_parent, parent_channels

    if search:
        key, layers = "fitness.feature_layers", cfg.fitness.feature_layers if cfg.fitness.kd in FEATURE_LOSSES else []
    else:
        key = "distill.feature_layers" if cfg.distill.feature_layers else "fitness.feature_layers"
        layers = (cfg.distill.feature_layers or cfg.fitness.feature_layers) if cfg.distill.kd in FEATURE_LOSSES else []
    if not layers:
        return
    names = {n for n, _ in build_parent(cfg, (parent_channels(cfg) or 3, 32, 32), 10).named_modules()}
    bad = [n for n in layers if n not in names]
    if bad:
        raise ConfigError(key, f"{short(bad[0])} is not a module of the parent (e.g. {', '.join(sorted(names)[1:5])})")


def _cmd_distill(args: argparse.Namespace) -> int:
    run = _load_run_arg(args.run_dir, "distill")
    for item in args.set:
        key = ".".join(parse_override(item)[0])
        if not (key.startswith("distill.") or key == "fitness.device"):
            raise UsageError(f"distill accepts only --set distill.* and fitness.device (got {short(item)})")
    cfg = config_from_dict(apply_overrides(run.config.to_dict(), args.set))
    _check_pick(run, args.pick, "--pick")
    _check_pick(run, args.pick2, "--pick2")
    if args.pick2 is not None and not cfg.distill.dml:
        raise UsageError("--pick2 names the second student of deep mutual learning: add --set distill.dml=true")
    _check_device(cfg)
    _check_feature_layers(cfg, search=False)
    from .final import distill_dir, run_distill

    print(f"evoprune distill: front member {args.pick} of {run.dir} ({cfg.distill.epochs} epochs, kd={cfg.distill.kd}"
          f"{', deep mutual learning' if cfg.distill.dml else ''})", flush=True)
    res = run_distill(run, cfg, args.pick, args.pick2, progress=not args.quiet, metric_runs=args.runs)
    t = res["test"]
    print(f"test accuracy {res['test_accuracy']:.4f} (parent {res['parent_test_accuracy']:.4f}); "
          f"val {res['val_accuracy']:.4f} (before {res['val_accuracy_before']:.4f}); {t['n_params']:,} params "
          f"({t['n_params'] / res['parent_test']['n_params']:.3f} of the parent), "
          f"{res['distill']['seconds']:.1f} s")
    if "second" in res:
        print(f"second student: test accuracy {res['second']['test_accuracy']:.4f}")
    print(f"wrote {distill_dir(run.dir, args.pick)}/model.pt, metrics.json")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import EXPORT, MissingExtra, check_onnx_available, export
    from .final import MODEL, distill_dir

    run = _load_run_arg(args.run_dir, "export")
    _check_pick(run, args.pick, "--pick")
    out = _path(args.out, "--out")
    try:
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT).is_file()
                                                  and not args.force)):
            raise UsageError(f"--out {out} is not empty and holds no evoprune export; choose another or pass --force")
    except OSError as exc:
        raise UsageError(f"--out {out}: {_os_error(exc)}") from None
    if args.distilled and not (distill_dir(run.dir, args.pick) / MODEL).is_file():
        raise UsageError(f"--distilled: no distilled model for front member {args.pick}; run "
                         f"`{_command('distill', str(run.dir), '--pick', str(args.pick))}` first")
    if args.onnx:
        try:
            check_onnx_available()
        except MissingExtra as exc:
            raise UsageError(str(exc)) from None
    meta = export(run, args.pick, out, distilled=args.distilled, torchscript=args.torchscript, onnx=args.onnx,
                  metric_runs=args.runs)
    print(f"exported front member {args.pick} ({meta['weights']}) to {out}: {', '.join(meta['files'].values())}, "
          f"export.json; reload check max |diff| {meta['check']['reload_max_abs_diff']:.3g}")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and an exception main() turns into exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evoprune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="evolutionary search for small accurate subnets")
    s.add_argument("--config", help="YAML config (default: the embedded digits task)")
    s.add_argument("--out", help="run directory (default: runs/search-<time>)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set search.generations=20 (repeatable)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    s.add_argument("--force", action="store_true", help="write into a non-empty --out (starts a run over)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_search)
    r = sub.add_parser("report", help="print the front of a run and write its plots")
    r.add_argument("run_dir")
    r.add_argument("--metrics", action="store_true", help="deployment metrics (test split) of the parent and front "
                   "members: accuracy, size, latency, memory; writes RUN_DIR/metrics.json")
    r.add_argument("--pick", type=int, action="append", help="with --metrics: only this front member (repeatable)")
    r.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    r.set_defaults(func=_cmd_report)
    t = sub.add_parser("train-parent", help="transfer-learn the parent once (parent.pt, parent.json in --out)")
    t.add_argument("--config", help="YAML config (default: the embedded digits task)")
    t.add_argument("--out", required=True, help="directory for parent.pt and parent.json")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set parent.epochs=10 (repeatable)")
    t.add_argument("--force", action="store_true", help="retrain and replace the parent files in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train_parent)
    d = sub.add_parser("distill", help="long KD fine-tune of a front member; test accuracy vs the parent")
    d.add_argument("run_dir")
    d.add_argument("--pick", type=int, required=True, help="front member (index in front.json)")
    d.add_argument("--pick2", type=int, help="deep mutual learning: the second student (default: a copy of --pick)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override distill.* (or fitness.device), e.g. --set distill.epochs=30")
    d.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_distill)
    e = sub.add_parser("export", help="write a front member as state_dict + genome (+ TorchScript / ONNX)")
    e.add_argument("run_dir")
    e.add_argument("--pick", type=int, required=True, help="front member (index in front.json)")
    e.add_argument("--out", required=True, help="export directory")
    e.add_argument("--distilled", action="store_true", help="the weights of `evoprune distill` (distill-K/model.pt)")
    e.add_argument("--torchscript", action="store_true", help="also subnet.torchscript.pt (torch.jit.trace)")
    e.add_argument("--onnx", action="store_true", help="also subnet.onnx (needs pip install 'evoprune[onnx]')")
    e.add_argument("--force", action="store_true", help="write into a non-empty --out")
    e.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    e.set_defaults(func=_cmd_export)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    print(f"evoprune: warning: {_one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")
        warnings.showwarning = _show_warning
        try:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help (errors raise UsageError instead)
                return exc.code if isinstance(exc.code, int) else EXIT_OK
            return args.func(args)
        except ConfigError as exc:
            print(f"evoprune: config error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except (UsageError, CheckpointError, FileNotFoundError) as exc:
            print(f"evoprune: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("evoprune: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
