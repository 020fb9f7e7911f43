"""Tables and figures from a run directory (reads its files only, never the search's state)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from evoprune.run.files import CONFIG, EVALUATIONS, FRONT_JSON, HISTORY, HYPERVOLUME_PLOT, PARETO_PLOT  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def read_front(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / FRONT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an evoprune run directory (no {FRONT_JSON})")
    return json.loads(path.read_text())


def front_table(run_dir: str | Path) -> str:
    """The front as a fixed-width table: accuracy, params, MACs, compression."""
    doc = read_front(run_dir)
    parent, metric = doc["parent"], doc.get("size_metric", "params")
    head = f"{'#':>3}  {'val acc':>8}  {'params':>10}  {'MACs':>12}  {'size':>6}  {'compr.':>7}  origin"
    lines = [head, "-" * len(head),
             f"{'P':>3}  {parent['accuracy']:8.4f}  {parent['n_params']:10,d}  {parent['macs']:12,d}  "
             f"{1.0:6.3f}  {1.0:6.2f}x  parent"]
    for i, m in enumerate(doc["front"]):
        lines.append(f"{i:>3}  {m['accuracy']:8.4f}  {m['n_params']:10,d}  {m['macs']:12,d}  "
                     f"{m['size_ratio']:6.3f}  {1.0 / m['size_ratio']:6.2f}x  {m.get('origin', '')}")
    lines.append(f"size = {metric} relative to the parent; val acc = validation accuracy after the search's short "
                 f"KD fine-tune (the `finetuned` weights, which export and report --metrics give by default)")
    return "\n".join(lines)


def _title(run: Path) -> str:
    """'simple_cnn on digits (runs/x)': architecture, dataset, run directory."""
    arch = data = "?"
    try:
        import yaml

        cfg = yaml.safe_load((run / CONFIG).read_text()) or {}
        arch = cfg.get("parent", {}).get("arch", "?")
        data = cfg.get("data", {}).get("name", "?")
    except (OSError, ValueError, AttributeError):
        pass
    return f"{arch} on {data} ({run.name})"


def write_plots(run_dir: str | Path) -> list[Path]:
    """pareto.png (every evaluation, the front numbered as `--pick` takes it, the parent) and
    hypervolume.png (per generation, on the hypervolume's whole range)."""
    run = Path(run_dir)
    doc = read_front(run)
    evals = [r for r in _read_csv(run / EVALUATIONS) if r.get("status", "ok") != "nonfinite"]
    metric = doc.get("size_metric", "params")
    front = doc["front"]
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    if evals:
        gens = [int(r["generation"]) for r in evals]
        sc = ax.scatter([float(r["size_ratio"]) for r in evals], [float(r["accuracy"]) for r in evals],
                        c=gens, cmap="viridis", s=14, alpha=0.5, label="evaluated")
        fig.colorbar(sc, ax=ax, label="generation")
    xs, ys = [m["size_ratio"] for m in front], [m["accuracy"] for m in front]
    ax.plot(xs, ys, "o-", color="crimson", ms=5, label="Pareto front (--pick K)", drawstyle="steps-post")
    for k, (x, y) in enumerate(zip(xs, ys)):
        ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(-4, 5), ha="right", fontsize=8,
                    color="crimson")
    parent_acc = doc["parent"]["accuracy"]
    ax.scatter([1.0], [parent_acc], marker="*", s=180, color="black", label=f"parent ({parent_acc:.4f})", zorder=5)
    ax.axhline(parent_acc, color="black", lw=0.6, ls=":")
    if front and 1.0 / min(xs) > 10:  # a front spanning more than a factor of 10 reads on a log scale
        ax.set_xscale("log")
    ax.set_xlabel(f"size ratio ({metric}, parent = 1)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"accuracy vs size: {_title(run)}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = [run / PARETO_PLOT]
    fig.savefig(out[0], dpi=120)
    plt.close(fig)

    hist = _read_csv(run / HISTORY)
    gens, hv = [int(h["generation"]) for h in hist], [float(h["hypervolume"]) for h in hist]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.plot(gens, hv, "o-")
    ax.set_ylim(0, 1)  # the hypervolume's whole range: a 2% gain looks like 2%
    if hv:
        ax.annotate(f"{hv[0]:.4f} -> {hv[-1]:.4f} ({(hv[-1] - hv[0]) / max(hv[0], 1e-12):+.1%})", (gens[-1], hv[-1]),
                    textcoords="offset points", xytext=(0, -16), ha="right", fontsize=9)
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (ref: acc 0, size 1)")
    ax.set_title(f"hypervolume per generation: {_title(run)}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(run / HYPERVOLUME_PLOT)
    fig.savefig(out[1], dpi=120)
    plt.close(fig)
    return out


def plot_distill_curve(history: list[dict[str, float]], path: Path, title: str,
                       start_accuracy: float | None = None) -> Path:
    """Train loss and validation accuracy per epoch of `evoprune distill` (epoch 0: `start_accuracy`)."""
    epochs = [h["epoch"] for h in history]
    accuracy = [h["val_accuracy"] for h in history]
    if start_accuracy is not None:
        epochs_acc, accuracy = [0] + epochs, [start_accuracy] + accuracy
    else:
        epochs_acc = epochs
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss (KD)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(epochs_acc, accuracy, "s-", color="tab:red", label="validation accuracy")
    ax2.set_ylabel("validation accuracy", color="tab:red")
    ax2.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_metrics(doc: dict[str, Any], path: Path, title: str) -> Path:
    """`report --metrics`: test accuracy, parameters and CPU latency of the picks next to the parent."""
    rows = [("parent", doc["parent"])] + [(f"#{m['pick']}", m) for m in doc["front"]]
    names = [n for n, _ in rows]
    panels = [("test top-1", [m["top1"] for _, m in rows], (0, 1)),
              ("parameters", [m["n_params"] for _, m in rows], None),
              ("latency, batch 1 (ms, CPU)", [m["latency_ms"]["cpu"]["batch_1"] for _, m in rows], None)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.5 + 0.35 * len(rows) + 1.2), sharey=True)
    colors = ["black"] + ["crimson"] * (len(rows) - 1)
    for ax, (label, values, lim) in zip(axes, panels):
        ax.barh(range(len(rows)), values, color=colors)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.4f}" if lim else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}"), (v, i), textcoords="offset points", xytext=(3, -3),
                        fontsize=7)
        ax.set_title(label, fontsize=9)
        if lim:
            ax.set_xlim(*lim)
        else:  # few, comma-grouped ticks: parameter counts run to six digits and more
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
