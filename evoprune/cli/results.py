"""`report`, `distill`, `export`, `predict`: the commands on a finished run and on its exports."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from evoprune.cli.checks import (check_device, check_feature_layers, check_onnx, check_pick, check_second_student,
                                 check_weights, load_run_arg)
from evoprune.cli.errors import EXIT_OK, UsageError, as_path, one_line, os_error
from evoprune.config import apply_overrides, config_from_dict, parse_override, short
from evoprune.run.files import (DEFAULT_WEIGHTS, DISTILL_CURVE, DISTILL_METRICS, DISTILLED_MODEL, FRONT_JSON,
                                METRICS_JSON, METRICS_PLOT, distill_dir, student_dir)


def cmd_report(args: argparse.Namespace) -> int:
    from evoprune.run.report import front_table, write_plots

    run_dir = as_path(args.run_dir, "report")
    try:
        is_run = (run_dir / FRONT_JSON).is_file()
    except OSError as exc:
        raise UsageError(os_error(exc)) from None
    if not is_run:
        raise UsageError(f"{run_dir} is not an evoprune run directory (no {FRONT_JSON})")
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
        from evoprune.run.report import plot_metrics

        run = load_run_arg(args.run_dir, "report")
        weights = args.weights or DEFAULT_WEIGHTS
        for k in args.pick if args.pick is not None else range(len(run.front)):
            check_pick(run, k, "--pick")
            check_weights(run, k, weights)
        doc = front_metrics(str(run_dir), args.pick or None, runs=args.runs, weights=weights)
        print(metrics_table(doc))
        figure = plot_metrics(doc, run_dir / METRICS_PLOT, f"{run.config.parent.arch} on {run.config.data.name} "
                              f"({run_dir.name}): test split, {weights} weights")
        print(f"wrote {run_dir / METRICS_JSON}, {figure}")
    return EXIT_OK


def distill_config(run: Any, sets: list[str], command: str) -> Any:
    """The run's config with `--set` overrides, which may touch only distill.* and fitness.device."""
    for item in sets:
        key = ".".join(parse_override(item)[0])
        if not (key.startswith("distill.") or key == "fitness.device"):
            raise UsageError(f"{command} accepts only --set distill.* and fitness.device (got {short(item)})")
    return config_from_dict(apply_overrides(run.config.to_dict(), sets))


def cmd_distill(args: argparse.Namespace) -> int:
    run = load_run_arg(args.run_dir, "distill")
    cfg = distill_config(run, args.set, "distill")
    if cfg.distill.dml and run.task.get("task") == "multilabel":
        raise UsageError("distill.dml matches two students' class distributions; this run is multi-label (independent "
                         "attributes): drop distill.dml")
    if args.student is not None:
        return distill_student(args, run, cfg)
    check_pick(run, args.pick, "--pick")
    check_pick(run, args.pick2, "--pick2")
    check_second_student(cfg, args.pick2)
    check_device(cfg)
    check_feature_layers(cfg, search=False)
    from evoprune.deploy.distill import run_distill

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
    print(f"wrote {distill_dir(run.dir, args.pick)}/{DISTILLED_MODEL}, {DISTILL_METRICS}, {DISTILL_CURVE}")
    return EXIT_OK


def distill_student(args: argparse.Namespace, run: Any, cfg: Any) -> int:
    """`distill --student ARCH`: the student distilled and trained on the labels alone, side by side."""
    if args.pick2 is not None:
        raise UsageError("--pick2 names a front member; with --student, distill.dml=true trains a second copy")
    extra = [f"distill.student={args.student}"] + (["distill.baseline=false"] if args.no_baseline else [])
    cfg = config_from_dict(apply_overrides(cfg.to_dict(), extra))
    check_device(cfg)
    from evoprune.deploy.student import build_student, run_student, student_table

    try:  # its name, input size and outputs: one line before any training
        build_student(cfg.distill, run.task["n_classes"], tuple(run.task["input_shape"]))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"evoprune distill: student {args.student} from the parent of {run.dir} ({cfg.distill.epochs} epochs, "
          f"kd={cfg.distill.kd}{'' if cfg.distill.baseline else ', no labels-only baseline'})", flush=True)
    try:
        res = run_student(run, cfg, progress=not args.quiet, metric_runs=args.runs)
    except ValueError as exc:  # a layer map that does not fit
        raise UsageError(str(exc)) from None
    print(student_table(res))
    print(f"wrote {student_dir(run.dir, args.student, cfg.distill.kd)}/{DISTILLED_MODEL}, {DISTILL_METRICS}")
    return EXIT_OK


def class_indices(text: str, names: list[str]) -> list[int]:
    """`--classes T-shirt/top,Shirt` or `0,6`: class indices, by name (any case) or number."""
    lower = {n.lower(): i for i, n in enumerate(names)}
    out = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        if token.isdigit() and int(token) < len(names):
            out.append(int(token))
        elif token.lower() in lower:
            out.append(lower[token.lower()])
        else:
            raise UsageError(f"--classes: {token!r} is not a class of this run ({', '.join(names[:12])})")
    return out


def cmd_specialists(args: argparse.Namespace) -> int:
    run = load_run_arg(args.run_dir, "specialists")
    cfg = distill_config(run, args.set, "specialists")
    check_pick(run, args.pick, "--pick")
    n_classes = run.task["n_classes"]
    if run.task.get("task") == "multilabel":
        raise UsageError(f"{run.dir} is multi-label: specialists group confused classes, and its outputs are "
                         "attributes")
    groups: int | list[list[int]] = args.groups
    if args.classes:
        names = run.task_data().class_names or [str(c) for c in range(n_classes)]
        groups = [class_indices(text, names) for text in args.classes]
    elif not 1 < args.groups < n_classes:
        raise UsageError(f"--groups {args.groups}: between 2 and {n_classes - 1} (the parent has {n_classes} classes)")
    if args.top_n < 1:
        raise UsageError(f"--top-n {args.top_n}: at least 1")
    check_device(cfg)
    from evoprune.deploy.specialists import run_specialists, specialists_table

    what = f"{args.groups} groups" if args.classes is None else f"{len(groups)} given group(s)"
    print(f"evoprune specialists: {what} of {run.dir}'s classes ({cfg.distill.epochs} epochs each, "
          f"from {'the parent' if args.pick is None else f'front member {args.pick}'})", flush=True)
    try:
        if not args.name or "/" in args.name or args.name.startswith("."):
            raise ValueError(f"--name {args.name!r}: a plain directory name inside {run.dir}")
        res = run_specialists(run, cfg, groups, args.top_n, args.pick, progress=not args.quiet, metric_runs=args.runs,
                              out_name=args.name)
    except ValueError as exc:  # groups that overlap
        raise UsageError(str(exc)) from None
    print(specialists_table(res))
    print(f"wrote {run.dir / args.name}/{DISTILL_METRICS}, specialist-0.pt ...")
    return EXIT_OK


def weights_arg(args: argparse.Namespace) -> str:
    """--weights, with --distilled as its older spelling."""
    if getattr(args, "distilled", False):
        if args.weights not in (None, "distilled"):
            raise UsageError(f"--distilled and --weights {args.weights} contradict each other; keep one")
        return "distilled"
    return args.weights or DEFAULT_WEIGHTS


def cmd_export(args: argparse.Namespace) -> int:
    from evoprune.deploy.export import EXPORT, export

    run = load_run_arg(args.run_dir, "export")
    check_pick(run, args.pick, "--pick")
    weights = weights_arg(args)
    check_weights(run, args.pick, weights)
    out = as_path(args.out, "--out")
    try:
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT).is_file()
                                                  and not args.force)):
            raise UsageError(f"--out {out} is not empty and holds no evoprune export; choose another or pass --force")
    except OSError as exc:
        raise UsageError(f"--out {out}: {os_error(exc)}") from None
    check_onnx(args.onnx)
    meta = export(run, args.pick, out, weights=weights, torchscript=args.torchscript, onnx=args.onnx,
                  metric_runs=args.runs)
    print(f"exported front member {args.pick} ({weights} weights) to {out}: {', '.join(meta['files'].values())}, "
          f"{EXPORT}; validation accuracy {meta['val_accuracy']:.4f} (the front's: "
          f"{meta['front_val_accuracy']:.4f}); reload check max |diff| {meta['check']['reload_max_abs_diff']:.3g}")
    return EXIT_OK


def input_images(paths: list[str]) -> list[Path]:
    """The image files `predict` was given (folders searched), or UsageError."""
    from evoprune.deploy.predict import image_files

    try:
        return image_files([as_path(text, "predict") for text in paths])
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def cmd_predict(args: argparse.Namespace) -> int:
    """The top-k classes of image files, by an `evoprune export` directory's model."""
    from evoprune.deploy.export import EXPORT

    d = as_path(args.export_dir, "predict")
    if not (d / EXPORT).is_file():
        raise UsageError(f"{d} is not an evoprune export directory (no {EXPORT}); make one with `evoprune export`")
    if args.top_k < 1:
        raise UsageError(f"--top-k: expected a positive number, got {args.top_k}")
    files = input_images(args.files)
    from evoprune.data.preprocess import NotAnImage
    from evoprune.deploy.predict import ImageClassifier, NoPreprocessing

    try:
        classifier = ImageClassifier(d)
    except NoPreprocessing as exc:
        raise UsageError(str(exc)) from None
    for f in files:
        try:
            top = classifier.top_classes(f, args.top_k)
        except NotAnImage as exc:
            raise UsageError(str(exc)) from None
        print(f"{f}: {', '.join(f'{name} {p:.3f}' for name, p in top)}", flush=True)
    return EXIT_OK
