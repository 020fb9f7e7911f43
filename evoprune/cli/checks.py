"""Checks of a user's input before any work: flags, paths, config, parent weights, the run to resume.

None of these has side effects, so bad input never creates, changes or damages a run directory.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from evoprune.cli.errors import UsageError, as_path, one_line, os_error
from evoprune.config import (ConfigError, apply_overrides, config_from_dict, load_config, parse_override, read_yaml,
                             short)
from evoprune.run.files import CONFIG, RUN_FILES, RUN_MARKERS
from evoprune.run.writer import RESUME_OVERRIDABLE, CheckpointError, RunWriter, flatten, resume_changes



def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_MARKERS)


def check_out_dir(out: Path, force: bool, cfg: Any = None) -> None:
    """Never write into a file, a directory that holds something else, or over a run, without --force.

    A run that stopped before its first generation was saved holds nothing to lose: the same config
    may start it again there (its trained parent is reused)."""
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
        from evoprune.parent.train import holds_only_parent

        if holds_only_parent(out):  # made by `train-parent`: a search reuses it (checked in search_inputs)
            return
        if RunWriter(out).has_checkpoint():
            raise UsageError(f"--out {out} already holds an evoprune run; continue it with "
                             f"`search --resume {out}` or start it over with --force")
        if is_run_dir(out) and {p.name for p in out.iterdir()} <= set(RUN_FILES):
            differs = config_difference(out, cfg)
            if differs:
                raise UsageError(f"--out {out} holds a run that stopped before its first generation was saved, "
                                 f"made with another config ({differs}); start it over with --force, or "
                                 f"choose another directory")
            return
        if any(out.iterdir()):
            raise UsageError(f"--out {out} is not empty and is not an evoprune run; "
                             f"choose another directory or pass --force")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None


def config_difference(run_dir: Path, cfg: Any) -> str | None:
    """None when the run's config.yaml is `cfg` (or it has none), else the first difference, readably."""
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        saved = flatten(config_from_dict(read_yaml(path)).to_dict())
    except ConfigError:
        return f"its {CONFIG} is unreadable"
    now = flatten(cfg.to_dict()) if cfg is not None else {}
    for key in saved:
        if saved[key] != now.get(key):
            return f"{key}: {short(saved[key])} there, {short(now.get(key))} now"
    return None


def check_same_config(run_dir: Path, cfg_dict: dict[str, Any], saved: Any) -> None:
    """A resume must continue the very run: config.yaml may differ only in the resumable keys."""
    if not isinstance(saved, dict):
        return  # a checkpoint written before configs were stored in it
    changed = resume_changes(saved, cfg_dict)
    now, then = flatten(cfg_dict), flatten(saved)
    if changed:
        k = changed[0]
        raise UsageError(f"--resume {run_dir}: {CONFIG} no longer matches the run's checkpoint "
                         f"({k}: {short(then[k])} in the checkpoint, {short(now[k])} in {CONFIG}"
                         f"{f', and {len(changed) - 1} more' if len(changed) > 1 else ''}); "
                         f"restore it, or start a new run")


def check_device(cfg: Any) -> None:
    """`fitness.device` must be one this machine has (the library's rule: resolve_device)."""
    from evoprune.fitness import resolve_device

    resolve_device(cfg.fitness.device)


def check_memory_format(cfg: Any) -> None:
    """`fitness.channels_last: true` on a CPU only where this torch survives the known crash (a probe)."""
    if cfg.fitness.channels_last is True:
        from evoprune.fitness import resolve_device
        from evoprune.fitness.precision import check_channels_last

        check_channels_last(cfg.fitness, resolve_device(cfg.fitness.device))


def check_evaluator(cfg: Any) -> None:
    """What the evaluator needs from this machine, before the parent is trained for it."""
    if cfg.evaluator.backend == "ray":
        from evoprune.fitness.evaluators.ray import import_ray

        import_ray()
    from evoprune.fitness.evaluators.forked import check_pool

    check_pool(cfg.evaluator.pool)


def check_parent_weights(cfg: Any) -> Any:
    """parent.weights must be a state_dict that loads into the configured parent (checked up front).

    Returns the task's data it had to load for that (the search reuses them), or None."""
    weights = cfg.parent.weights
    if not weights:
        return None
    if "\0" in weights:
        raise ConfigError("parent.weights", f"expected a file path, got {short(weights)}")
    p = Path(weights)
    try:
        if p.is_dir():
            raise ConfigError("parent.weights", f"{p} is a directory, not a state_dict file")
        if not p.is_file():
            raise ConfigError("parent.weights", f"file not found: {p}")
    except OSError as exc:
        raise ConfigError("parent.weights", os_error(exc)) from None
    import torch

    from evoprune.data.task import load_data
    from evoprune.parent.train import build_parent, load_state_dict_checked, parent_channels, split_problem

    # Only this file is read in the two `try`s below: whatever fails there, the file is unusable.
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("parent.weights", f"{p} is not a PyTorch state_dict file "
                          f"({exc.__class__.__name__}: {one_line(exc, 120)})") from None
    if not isinstance(state, dict):
        raise ConfigError("parent.weights", f"{p} holds a {type(state).__name__}, not a state_dict")
    data = load_data(cfg.data, cfg.seed, channels=parent_channels(cfg))
    model = build_parent(cfg.parent, data.input_shape, data.n_classes)
    try:
        load_state_dict_checked(model, state, p)
    except ValueError as exc:  # its own one-line account of missing / unexpected keys
        raise ConfigError("parent.weights", one_line(exc, 300)) from None
    except Exception as exc:  # e.g. RuntimeError: size mismatch
        width = cfg.parent.width if cfg.parent.width is not None else "default"
        raise ConfigError("parent.weights", f"{p} does not fit parent.arch={cfg.parent.arch} (width {width}): "
                          f"{one_line(exc, 200)}") from None
    problem = split_problem(cfg)  # the file is a fitting parent: was it trained on this run's held-out images?
    if problem:
        raise ConfigError("parent.weights", problem)
    return data


def resume_config(args: argparse.Namespace) -> tuple[Path, Any, dict[str, Any]]:
    """The run directory, its config (with the allowed overrides) and its checkpoint, after every check;
    the checkpoint is empty for a run that stopped before its first generation was saved."""
    run_dir = as_path(args.resume, "--resume")
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
    has_config, has_checkpoint = (run_dir / CONFIG).is_file(), writer.has_checkpoint()
    if has_checkpoint and not has_config:
        raise UsageError(f"--resume {run_dir}: {CONFIG} is missing; a resume needs the run's own config")
    if not has_config:
        raise UsageError(f"--resume {run_dir}: not an evoprune run directory (no {CONFIG} and checkpoint); "
                         f"a run that stopped before writing its config is started again with its own "
                         f"`search --config ... --out {run_dir}`")
    cfg = config_from_dict(apply_overrides(read_yaml(run_dir / CONFIG), args.set))
    if not has_checkpoint:  # stopped before its first generation was saved: nothing to lose, start again
        return run_dir, cfg, {}
    try:
        _, doc, _ = writer.load_checkpoint()
    except CheckpointError as exc:  # no checkpoint is usable (each file's problem in one line)
        raise UsageError(str(exc)) from None
    check_same_config(run_dir, cfg.to_dict(), doc.get("config"))
    return run_dir, cfg, doc


def search_inputs(args: argparse.Namespace) -> tuple[Path, Any, dict[str, Any], Any]:
    """Every check of a search's input, before any work: run directory, config, checkpoint to resume
    (empty: start the run from its beginning), and the task's data when a check already loaded them
    (else None)."""
    if args.resume is not None:
        run_dir, cfg, checkpoint = resume_config(args)
    else:
        checkpoint = {}
        cfg = load_config(as_path(args.config, "--config") if args.config is not None else None, args.set)
        run_dir = as_path(args.out, "--out") if args.out is not None else \
            Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
        check_out_dir(run_dir, args.force, cfg)
        check_parent_dir(run_dir, cfg, args.force)
    check_device(cfg)
    check_evaluator(cfg)
    check_memory_format(cfg)
    data = check_parent_weights(cfg)
    check_feature_layers(cfg, search=True)
    return run_dir, cfg, checkpoint, data


def check_parent_dir(out: Path, cfg: Any, force: bool) -> None:
    """A `train-parent` directory as --out: its parent must be the one this config asks for."""
    from evoprune.parent.train import holds_only_parent, parent_dir_problem

    problem = parent_dir_problem(out, cfg, force) if holds_only_parent(out) else None
    if problem:
        raise UsageError(problem)


def load_run_arg(text: str, flag: str) -> Any:
    from evoprune.run.reader import load_run

    run_dir = as_path(text, flag)
    try:
        run = load_run(run_dir)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UsageError(os_error(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{run_dir}: damaged run files ({exc.__class__.__name__}: {one_line(exc, 120)})") from None
    problem = run.data_problem()  # every command that loads a run reads its data
    if problem:
        raise UsageError(f"{flag}: {problem}")
    return run


def check_pick(run: Any, k: int | None, flag: str) -> None:
    if k is not None and not 0 <= k < len(run.front):
        raise UsageError(f"{flag} {k}: the front of {run.dir} has members 0..{len(run.front) - 1}")


def check_weights(run: Any, k: int, weights: str) -> None:
    """Front member `k` must be available with `weights` (the library's rule: Run.weights_problem)."""
    problem = run.weights_problem(k, weights)
    if problem:
        raise UsageError(f"--weights {weights}: {problem}")


def check_second_student(cfg: Any, pick2: int | None) -> None:
    """--pick2 only with deep mutual learning (the library's rule: deploy.distill.check_second_student)."""
    from evoprune.deploy.distill import check_second_student as library_check

    try:
        library_check(cfg.distill, pick2)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_onnx(wanted: bool) -> None:
    """--onnx needs its packages installed (the library's rule: deploy.export.check_onnx_available)."""
    if wanted:
        from evoprune.deploy.export import MissingExtra, check_onnx_available

        try:
            check_onnx_available()
        except MissingExtra as exc:
            raise UsageError(str(exc)) from None


def check_feature_layers(cfg: Any, search: bool) -> None:
    """Configured feature layers (of the search's or the final KD loss) must be modules of the parent,
    and so of every subnet. Module names do not depend on the input size or the classes."""
    from evoprune.config.vocab import FEATURE_KD_LOSSES
    from evoprune.parent.train import build_parent, parent_channels

    if search:
        key, layers = "fitness.feature_layers", cfg.fitness.feature_layers if cfg.fitness.kd in FEATURE_KD_LOSSES else []
    else:
        key = "distill.feature_layers" if cfg.distill.feature_layers else "fitness.feature_layers"
        layers = (cfg.distill.feature_layers or cfg.fitness.feature_layers) if cfg.distill.kd in FEATURE_KD_LOSSES else []
    if not layers:
        return
    names = {n for n, _ in build_parent(cfg.parent, (parent_channels(cfg) or 3, 32, 32), 10).named_modules()}
    bad = [n for n in layers if n not in names]
    if bad:
        raise ConfigError(key, f"{short(bad[0])} is not a module of the parent (e.g. {', '.join(sorted(names)[1:5])})")
