"""Command line: search, report, train-parent, distill, export, predict, config; errors become one line and an exit code.

Every check of the user's input (flags, paths, config, parent weights, the checkpoint to resume)
runs before any work starts, so bad input never creates, changes or damages a run directory.
Exit codes: 0 ok, 1 the run failed (one paragraph says why), 2 bad input, 130 Ctrl-C, 143 SIGTERM.
This module imports no torch: a command's module is imported when the command runs.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings
from typing import Any, Callable

from evoprune import __version__
from evoprune.cli.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UsageError, as_path, one_line, paragraph,
                                 raise_terminated, stop_code, stop_word)
from evoprune.config import ConfigError, load_config
from evoprune.errors import RunFailed
from evoprune.run.files import WEIGHTS


def command_in(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The subcommand `name` of `evoprune.cli.<module>`, imported only when it runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"evoprune.cli.{module}"), name)(args)
    return run


def cmd_config(args: argparse.Namespace) -> int:
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
    s.set_defaults(func=command_in("search", "cmd_search"))
    r = sub.add_parser("report", help="print the front of a run and write its plots")
    r.add_argument("run_dir")
    r.add_argument("--metrics", action="store_true", help="deployment metrics (test split) of the parent and front "
                   "members: accuracy, size, latency, memory; writes RUN_DIR/metrics.json")
    r.add_argument("--pick", type=int, action="append", help="with --metrics: only this front member (repeatable)")
    r.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    r.add_argument("--weights", choices=WEIGHTS, help="with --metrics: the members' weights; finetuned (default): "
                   "the short KD fine-tune the search ran; pruned: before any fine-tune; distilled: `evoprune "
                   "distill`'s")
    r.set_defaults(func=command_in("results", "cmd_report"))
    t = sub.add_parser("train-parent", help="transfer-learn the parent once (parent.pt, parent.json in --out)")
    t.add_argument("--config", help="YAML config (default: the embedded digits task)")
    t.add_argument("--out", required=True, help="directory for parent.pt and parent.json")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set parent.epochs=10 (repeatable)")
    t.add_argument("--force", action="store_true", help="retrain and replace the parent files in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=command_in("search", "cmd_train_parent"))
    d = sub.add_parser("distill", help="long KD fine-tune of a front member (or any --student); test accuracy vs "
                                       "the parent")
    d.add_argument("run_dir")
    who = d.add_mutually_exclusive_group(required=True)
    who.add_argument("--pick", type=int, help="front member (index in front.json)")
    who.add_argument("--student", metavar="ARCH", help="an architecture to distil from the parent instead (built-in, "
                     "torchvision or my_pkg.mod:build), reported against itself trained without the teacher")
    d.add_argument("--no-baseline", action="store_true", help="--student: skip the labels-only training")
    d.add_argument("--pick2", type=int, help="deep mutual learning: the second student (default: a copy of --pick)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override distill.* (or fitness.device), e.g. --set distill.epochs=30")
    d.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=command_in("results", "cmd_distill"))
    sp = sub.add_parser("specialists", help="specialists for the classes the parent confuses (Hinton et al. 2015), "
                                            "combined with it; test accuracy with and without them")
    sp.add_argument("run_dir")
    how = sp.add_mutually_exclusive_group(required=True)
    how.add_argument("--groups", type=int, help="how many groups of confused classes (K-means; one specialist each)")
    how.add_argument("--classes", action="append", metavar="NAMES", help="a group of your own, class names or "
                     "indices separated by commas (repeat for more groups; the others stay with the parent)")
    sp.add_argument("--top-n", type=int, default=2, help="a specialist is consulted when one of its classes is among "
                    "the parent's top-n for an example (default 2)")
    sp.add_argument("--name", default="specialists", help="RUN_DIR's subdirectory written (default specialists; "
                    "another name keeps several groupings side by side)")
    sp.add_argument("--pick", type=int, help="start each specialist from this front member (a smaller subnet) "
                    "instead of the parent")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override distill.* (the specialists' training recipe) or fitness.device")
    sp.add_argument("--runs", type=int, default=20, help="timed forwards per latency figure (median)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=command_in("results", "cmd_specialists"))
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
    e.set_defaults(func=command_in("results", "cmd_export"))
    p = sub.add_parser("predict", help="the top classes of image files by an exported model")
    p.add_argument("export_dir", help="a directory written by `evoprune export`")
    p.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image, most likely first")
    p.set_defaults(func=command_in("results", "cmd_predict"))
    c = sub.add_parser("config", help="print the resolved config as YAML (the embedded default, --config, --set)")
    c.add_argument("--config", help="YAML config (default: the embedded digits task)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set search.generations=20 (repeatable)")
    c.set_defaults(func=cmd_config)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    print(f"evoprune: warning: {one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 bad input, 130 Ctrl-C, 143 SIGTERM)."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if on_main_thread else None
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
        except (UsageError, FileNotFoundError) as exc:
            print(f"evoprune: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except RunFailed as exc:
            print(paragraph(f"evoprune: error: {exc}"), file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as exc:
            print(f"evoprune: {stop_word(exc)}", file=sys.stderr)
            return stop_code(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
