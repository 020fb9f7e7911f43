"""Command line: search, report, train-parent, distill, export, config; errors become one line and an exit code.

Every check of the user's input (flags, paths, config, parent weights, the checkpoint to resume)
runs before any work starts, so bad input never creates, changes or damages a run directory.
Exit codes: 0 ok, 1 the run failed (one paragraph says why), 2 bad input, 130 Ctrl-C, 143 SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

from evoprune import __version__
from evoprune.cli.checks import (UsageError, as_path, check_device, check_feature_layers, check_pick, command, load_run_arg,
                     one_line, os_error, pin_evaluator, search_inputs)
from evoprune.config import (ConfigError, apply_overrides, config_from_dict, load_config, parse_override, read_yaml,
                     save_config, short)
from evoprune.errors import RunFailed
from evoprune.run.writer import FAILED_GENOME, WEIGHTS, CheckpointError, RunWriter

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a job scheduler, `kill`): handled like Ctrl-C, so the checkpoint is kept."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _stop_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _paragraph(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=100, break_long_words=False, break_on_hyphens=False)



def _again(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that starts this run again from its beginning (allowed while no generation is saved)."""
    again = (["--config", args.config] if args.config else []) + [f"--set={s}" for s in args.set]
    return command("search", *again, "--out", str(run_dir), *(["--force"] if args.force else []))


def _how_to_go_on(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool) -> str:
    """How to continue a search that stopped: resume from its checkpoint, or start it again."""
    writer = RunWriter(run_dir)
    resumable = resuming
    if not resuming and writer.has_checkpoint():
        try:  # the checkpoint is this run's only once this run has written its config
            resumable = config_from_dict(read_yaml(run_dir / "config.yaml")) == cfg
        except (ConfigError, OSError):
            resumable = False
    if resumable:
        more = [f"--set={s}" for s in args.set] if resuming else []
        return f"every completed generation is saved; continue with: {command('search', '--resume', str(run_dir), *more)}"
    return f"no generation was saved yet; start again with: {_again(args, run_dir)}"


def _interrupted(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool, exc: BaseException) -> int:
    """One line on how to go on after Ctrl-C or SIGTERM, then exit code 130 or 143."""
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    print(f"evoprune: {what}; {_how_to_go_on(args, run_dir, cfg, resuming)}", file=sys.stderr, flush=True)
    return _stop_code(exc)


def _failed(args: argparse.Namespace, run_dir: Path, cfg: Any, resuming: bool, exc: RunFailed) -> int:
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
    go_on = _how_to_go_on(args, run_dir, cfg, resuming)
    print(_paragraph(f"evoprune: the search stopped: {exc}.{saved} {go_on[0].upper()}{go_on[1:]}"),
          file=sys.stderr, flush=True)
    return EXIT_FAILED


# -- commands -----------------------------------------------------------------------------------


def _cmd_search(args: argparse.Namespace) -> int:
    try:
        run_dir, cfg, checkpoint, data = search_inputs(args)
    except OSError as exc:  # a path the system cannot even look at (name too long, no permission...)
        raise UsageError(os_error(exc)) from None
    resuming = bool(checkpoint)

    from evoprune.fitness import build_fitness
    from evoprune.run.report import front_table
    from evoprune.evolve.loop import Search

    progress = not args.quiet
    print(f"evoprune search -> {run_dir}", flush=True)
    from evoprune import cpu_load

    if cpu_load.chosen:
        print(cpu_load.chosen, flush=True)
    if args.resume is not None and not resuming:
        print(f"no generation of {run_dir} was saved before it stopped: starting it again from its config.yaml",
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
        writer = RunWriter(run_dir)
        if resuming:
            writer.clean()  # temporary files of a killed write
            if args.set:  # the new budget belongs to the run from now on (a later plain resume keeps it)
                save_config(cfg, run_dir / "config.yaml")
        Search(fitness, run_dir, progress=progress).run(resume=resuming)
    except KeyboardInterrupt as exc:
        return _interrupted(args, run_dir, cfg, resuming, exc)
    except RunFailed as exc:
        return _failed(args, run_dir, cfg, resuming, exc)
    print(front_table(run_dir))
    print(f"written: {run_dir}/front.json, evaluations.csv, history.csv, pareto.png, hypervolume.png")
    return EXIT_OK


def _cmd_train_parent(args: argparse.Namespace) -> int:
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
        print(f"evoprune: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; no parent saved",
              file=sys.stderr, flush=True)
        return _stop_code(exc)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parent {cfg.parent.arch} ({meta['source']}): val acc {meta['val_accuracy']:.4f}, {n_params:,} params, "
          f"data {data.describe()}", flush=True)
    print(f"written: {out}/parent.pt, parent.json; use it with `search --out {out}` (same config) or "
          f"parent.weights={out}/parent.pt", flush=True)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from evoprune.run.report import front_table, write_plots

    run_dir = as_path(args.run_dir, "report")
    try:
        is_run = (run_dir / "front.json").is_file()
    except OSError as exc:
        raise UsageError(os_error(exc)) from None
    if not is_run:
        raise UsageError(f"{run_dir} is not an evoprune run directory (no front.json)")
    try:
        table = front_table(run_dir)
        paths = write_plots(run_dir)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # reading the run's files
        raise UsageError(f"{run_dir}: damaged run files ({exc.__class__.__name__}: {one_line(exc, 120)}); "
                         f"`search --resume {run_dir}` rewrites them") from None
    print(table)
    for path in paths:
        print(f"wrote {path}")
    if getattr(args, "metrics", False):
        from evoprune.deploy.metrics import front_metrics, metrics_table

        run = load_run_arg(args.run_dir, "report")
        weights = args.weights or "finetuned"
        for k in args.pick if args.pick is not None else range(len(run.front)):
            check_pick(run, k, "--pick")
            problem = run.weights_problem(k, weights)
            if problem:
                raise UsageError(f"--weights {weights}: {problem}")
        from evoprune.run.report import plot_metrics

        doc = front_metrics(str(run_dir), args.pick or None, runs=args.runs, weights=weights)
        print(metrics_table(doc))
        figure = plot_metrics(doc, run_dir / "metrics.png", f"{run.config.parent.arch} on {run.config.data.name} "
                              f"({run_dir.name}): test split, {weights} weights")
        print(f"wrote {run_dir / 'metrics.json'}, {figure}")
    return EXIT_OK


# -- final distillation and export (evoprune.final, evoprune.export) ------------------------------


def _cmd_distill(args: argparse.Namespace) -> int:
    run = load_run_arg(args.run_dir, "distill")
    for item in args.set:
        key = ".".join(parse_override(item)[0])
        if not (key.startswith("distill.") or key == "fitness.device"):
            raise UsageError(f"distill accepts only --set distill.* and fitness.device (got {short(item)})")
    cfg = config_from_dict(apply_overrides(run.config.to_dict(), args.set))
    check_pick(run, args.pick, "--pick")
    check_pick(run, args.pick2, "--pick2")
    if args.pick2 is not None and not cfg.distill.dml:
        raise UsageError("--pick2 names the second student of deep mutual learning: add --set distill.dml=true")
    check_device(cfg)
    check_feature_layers(cfg, search=False)
    from evoprune.deploy.distill import run_distill
    from evoprune.run.writer import distill_dir

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
    print(f"wrote {distill_dir(run.dir, args.pick)}/model.pt, metrics.json, curve.png")
    return EXIT_OK


def _weights_arg(args: argparse.Namespace) -> str:
    """--weights, with --distilled as its older spelling."""
    if getattr(args, "distilled", False):
        if args.weights not in (None, "distilled"):
            raise UsageError(f"--distilled and --weights {args.weights} contradict each other; keep one")
        return "distilled"
    return args.weights or "finetuned"


def _cmd_export(args: argparse.Namespace) -> int:
    from evoprune.deploy.export import EXPORT, MissingExtra, check_onnx_available, export

    run = load_run_arg(args.run_dir, "export")
    check_pick(run, args.pick, "--pick")
    weights = _weights_arg(args)
    problem = run.weights_problem(args.pick, weights)
    if problem:
        raise UsageError(f"--weights {weights}: {problem}")
    out = as_path(args.out, "--out")
    try:
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT).is_file()
                                                  and not args.force)):
            raise UsageError(f"--out {out} is not empty and holds no evoprune export; choose another or pass --force")
    except OSError as exc:
        raise UsageError(f"--out {out}: {os_error(exc)}") from None
    if args.onnx:
        try:
            check_onnx_available()
        except MissingExtra as exc:
            raise UsageError(str(exc)) from None
    meta = export(run, args.pick, out, weights=weights, torchscript=args.torchscript, onnx=args.onnx,
                  metric_runs=args.runs)
    print(f"exported front member {args.pick} ({weights} weights) to {out}: {', '.join(meta['files'].values())}, "
          f"export.json; validation accuracy {meta['val_accuracy']:.4f} (the front's: "
          f"{meta['front_val_accuracy']:.4f}); reload check max |diff| {meta['check']['reload_max_abs_diff']:.3g}")
    return EXIT_OK


def _image_files(paths: list[str]) -> list[Path]:
    """The files named, and the image files inside the folders named (recursively, sorted)."""
    from evoprune.data.preprocess import IMAGE_SUFFIXES

    files: list[Path] = []
    for text in paths:
        p = as_path(text, "predict")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return files


def _cmd_predict(args: argparse.Namespace) -> int:
    """The top-k classes of image files, by an `evoprune export` directory's model."""
    from evoprune.deploy.export import EXPORT

    d = as_path(args.export_dir, "predict")
    if not (d / EXPORT).is_file():
        raise UsageError(f"{d} is not an evoprune export directory (no {EXPORT}); make one with `evoprune export`")
    if args.top_k < 1:
        raise UsageError(f"--top-k: expected a positive number, got {args.top_k}")
    files = _image_files(args.files)
    import torch

    from evoprune.deploy.export import load_exported
    from evoprune.data.preprocess import NotAnImage

    model = load_exported(d)
    prep = getattr(model, "preprocess", None)
    if prep is None:
        raise UsageError(f"{d}/{EXPORT} holds no preprocessing (an export made before evoprune recorded it); "
                         f"export the front member again")
    n_classes = json.loads((d / EXPORT).read_text())["n_classes"]
    names = prep.class_names or [str(c) for c in range(n_classes)]
    k = min(args.top_k, len(names))
    for f in files:
        try:
            x = prep(f)
        except NotAnImage as exc:
            raise UsageError(str(exc)) from None
        with torch.inference_mode():
            probs = torch.softmax(model(x).float(), dim=1)[0]
        top = torch.topk(probs, k)
        shown = ", ".join(f"{names[int(c)]} {float(p):.3f}" for p, c in zip(top.values, top.indices))
        print(f"{f}: {shown}", flush=True)
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config (the embedded default, --config, then --set) as YAML."""
    import yaml

    cfg = load_config(as_path(args.config, "--config") if args.config is not None else None, args.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and an exception main() turns into exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evoprune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"evoprune {__version__}")
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
    r.add_argument("--weights", choices=WEIGHTS, help="with --metrics: the members' weights; finetuned (default): "
                   "the short KD fine-tune the search ran; pruned: before any fine-tune; distilled: `evoprune "
                   "distill`'s")
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
    e.add_argument("--weights", choices=WEIGHTS, help="finetuned (default): the short KD fine-tune the search "
                   "ran, whose validation accuracy front.json shows; pruned: before any fine-tune; distilled: "
                   "`evoprune distill`'s (distill-K/model.pt)")
    e.add_argument("--distilled", action="store_true", help="the same as --weights distilled")
    e.add_argument("--torchscript", action="store_true", help="also subnet.torchscript.pt (torch.jit.trace)")
    e.add_argument("--onnx", action="store_true", help="also subnet.onnx (needs pip install 'evoprune[onnx]')")
    e.add_argument("--force", action="store_true", help="write into a non-empty --out")
    e.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    e.set_defaults(func=_cmd_export)
    p = sub.add_parser("predict", help="the top classes of image files by an exported model")
    p.add_argument("export_dir", help="a directory written by `evoprune export`")
    p.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image, most likely first")
    p.set_defaults(func=_cmd_predict)
    c = sub.add_parser("config", help="print the resolved config as YAML (the embedded default, --config, --set)")
    c.add_argument("--config", help="YAML config (default: the embedded digits task)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set search.generations=20 (repeatable)")
    c.set_defaults(func=_cmd_config)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    print(f"evoprune: warning: {one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 bad input, 130 Ctrl-C, 143 SIGTERM)."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")
        warnings.showwarning = _show_warning
        try:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version (errors raise UsageError instead)
                return exc.code if isinstance(exc.code, int) else EXIT_OK
            return args.func(args)
        except ConfigError as exc:
            print(f"evoprune: config error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except (UsageError, CheckpointError, FileNotFoundError) as exc:
            print(f"evoprune: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except RunFailed as exc:
            print(_paragraph(f"evoprune: error: {exc}"), file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as exc:
            print(f"evoprune: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
            return _stop_code(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
