"""Tables and figures from a run directory (reads files only: no torch, no search state)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def read_front(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "front.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an evoprune run directory (no front.json)")
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
    lines.append(f"size = {metric} relative to the parent; accuracy on the validation split")
    return "\n".join(lines)


def write_plots(run_dir: str | Path) -> list[Path]:
    """pareto.png (every evaluation, the front, the parent) and hypervolume.png (per generation)."""
    run = Path(run_dir)
    doc = read_front(run)
    evals = [r for r in _read_csv(run / "evaluations.csv") if r.get("status", "ok") == "ok"]
    metric = doc.get("size_metric", "params")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if evals:
        gens = [int(r["generation"]) for r in evals]
        sc = ax.scatter([float(r["size_ratio"]) for r in evals], [float(r["accuracy"]) for r in evals],
                        c=gens, cmap="viridis", s=14, alpha=0.6, label="evaluated")
        fig.colorbar(sc, ax=ax, label="generation")
    front = doc["front"]
    ax.plot([m["size_ratio"] for m in front], [m["accuracy"] for m in front], "o-", color="crimson",
            ms=5, label="Pareto front", drawstyle="steps-post")
    ax.scatter([1.0], [doc["parent"]["accuracy"]], marker="*", s=160, color="black", label="parent", zorder=5)
    ax.set_xlabel(f"size ratio ({metric}, parent = 1)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("evoprune: accuracy vs size")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = [run / "pareto.png"]
    fig.savefig(out[0], dpi=120)
    plt.close(fig)

    hist = _read_csv(run / "history.csv")
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot([int(h["generation"]) for h in hist], [float(h["hypervolume"]) for h in hist], "o-")
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (ref: acc 0, size 1)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(run / "hypervolume.png")
    fig.savefig(out[1], dpi=120)
    plt.close(fig)
    return out
