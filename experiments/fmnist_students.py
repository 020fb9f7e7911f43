"""Figures on real data for distillation beyond the front: on Fashion-MNIST, the ResNet-20 parent of
results/compare-fmnist distilled into a small CNN with each KD loss against the same CNN trained on the labels
alone, and specialists for the classes the parent confuses against the parent alone.

    python experiments/fmnist_students.py                   # runs what is missing, then writes the report
    python experiments/fmnist_students.py --report          # the report only, from the runs' files

Steps (each skipped when its output exists): a search run directory holding the parent (`evoprune search`
with `parent.weights`, a minimal budget: only its parent and data are used), `evoprune distill --student
simple_cnn` per KD loss (the labels-only baseline once, with hinton), `evoprune specialists`. Writes
results/fmnist-students/{report.md, report.json, students.png, specialists.png} with the commands, commit,
torch, machine and date. Needs Debian's dataset-fashion-mnist (or the four IDX files in --data-root).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from provenance import ROOT, provenance

LOSSES = ("hinton", "mse", "smooth_l1", "attention", "feature")
STUDENT, WIDTH = "simple_cnn", 16
# Specialists: the paper's grouping (K-means on the covariance of the parent's predictions) at 3 and 5 groups,
# and the four classes Fashion-MNIST is known to confuse, given by name (with alpha 0.9, and 0.3: more labels).
SPECIALISTS = {"specialists-kmeans3": ["--groups", "3"], "specialists-kmeans5": ["--groups", "5"],
               "specialists-tops": ["--classes", "T-shirt/top,Pullover,Coat,Shirt"],
               "specialists-tops-alpha0.3": ["--classes", "T-shirt/top,Pullover,Coat,Shirt", "--set=distill.alpha=0.3"]}


def evoprune(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoprune", *args]


def commands(run: Path, data_root: str, epochs: int) -> list[tuple[Path, list[str]]]:
    """(the file a step writes, its command) in order."""
    parent = ROOT / "results" / "compare-fmnist" / "parent" / "parent.pt"
    steps = [(run / "front.json", evoprune(
        "search", "--out", str(run), "--quiet", "--set=data.name=fashion_mnist", f"--set=data.root={data_root}",
        "--set=parent.arch=resnet20", "--set=parent.epochs=15", "--set=parent.lr=0.1", "--set=parent.batch_size=128",
        f"--set=parent.weights={parent}", "--set=search.population=2", "--set=search.offspring=2",
        "--set=search.generations=1", "--set=search.patience=0"))]
    for kd in LOSSES:
        steps.append((run / f"student-{STUDENT}-{kd}" / "metrics.json", evoprune(
            "distill", str(run), "--student", STUDENT, f"--set=distill.student_width={WIDTH}",
            f"--set=distill.epochs={epochs}", f"--set=distill.kd={kd}", "--runs", "10", "--quiet",
            *([] if kd == "hinton" else ["--no-baseline"]))))
    for name, how in SPECIALISTS.items():
        steps.append((run / name / "metrics.json", evoprune(
            "specialists", str(run), *how, "--name", name, f"--set=distill.epochs={epochs}", "--runs", "10",
            "--quiet")))
    return steps


def report(run: Path, out: Path, steps: list[tuple[Path, list[str]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = {kd: json.loads((run / f"student-{STUDENT}-{kd}" / "metrics.json").read_text()) for kd in LOSSES}
    specs = {name: json.loads((run / name / "metrics.json").read_text()) for name in SPECIALISTS}
    base = students["hinton"]
    rows = {"teacher (ResNet-20)": base["teacher"]["test"], f"{STUDENT} w{WIDTH}, labels only": base["labels_only"]["test"]}
    rows.update({f"{STUDENT} w{WIDTH}, KD {kd}": students[kd]["distilled"]["test"] for kd in LOSSES})
    prov = provenance()
    lines = ["# Fashion-MNIST: students distilled from a ResNet-20, and specialists", "",
             f"Commit {prov['commit']}, torch {prov['torch']}, {prov['machine']['cpu']} ({prov['machine']['cores']} "
             f"cores), {prov['date']}. {prov['calibration']}", "", "Commands, in order:", ""]
    lines += [f"    {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}" for _, cmd in steps]
    lines += ["", f"## Students ({base['epochs']} epochs each, test split, {base['teacher']['test']['n_samples']} "
              "images)", "", "| model | top-1 | macro precision | macro recall | macro F1 | params | MACs | "
              "CPU ms (batch 1) |", "|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['top1']:.4f} | {m['precision_macro']:.4f} | {m['recall_macro']:.4f} | "
                     f"{m['f1_macro']:.4f} | {m['n_params']:,} | {m['macs']:,} | "
                     f"{m['latency_ms']['cpu']['batch_1']:.3f} |")
    for name, spec in specs.items():
        how = " ".join(SPECIALISTS[name])
        lines += ["", f"## Specialists: `{how}` ({len(spec['groups'])} group(s), top-{spec['top_n']}, each from the "
                  f"{spec['start']})", "", "| group | test images | parent alone | with specialists | specialist on "
                  "its task | params |", "|---|---|---|---|---|---|"]
        for g in spec["per_group"]:
            lines.append(f"| {', '.join(g['names'] or map(str, g['classes']))} | {g['n_test']} | "
                         f"{g['generalist_accuracy']:.4f} | {g['combined_accuracy']:.4f} | "
                         f"{g['specialist_accuracy_own_task']:.4f} | {g['params']:,} |")
        lines.append(f"| all | {spec['n_test']} | {spec['generalist_test_accuracy']:.4f} | "
                     f"{spec['combined_test_accuracy']:.4f} | | {spec['cost']['generalist_params']:,} (parent) |")
        lines += ["", f"Specialists consulted per test image: {spec['active_specialists_mean']:.2f}; combining: "
                  f"{spec['cost']['combine_ms_per_example']:.3f} ms per image."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"provenance": prov, "students": rows, "specialists": specs},
                                                indent=1) + "\n")

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rows)
    ax.barh(names, [rows[n]["top1"] for n in names], color=["0.3", "0.6"] + ["tab:blue"] * len(LOSSES))
    for i, n in enumerate(names):
        ax.text(rows[n]["top1"], i, f" {rows[n]['top1']:.4f}", va="center", fontsize=8)
    low = min(r["top1"] for r in rows.values())
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.set_title(f"Fashion-MNIST: ResNet-20 -> {STUDENT} (w{WIDTH}), {base['epochs']} epochs, {prov['date'][:10]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "students.png", dpi=120)
    plt.close(fig)

    rows_per_panel = [len(v["groups"]) + 1 for v in specs.values()]
    fig, axes = plt.subplots(len(specs), 1, figsize=(8, 1.2 + 0.35 * sum(rows_per_panel) + 0.5 * len(specs)),
                             squeeze=False, gridspec_kw={"height_ratios": rows_per_panel})
    for ax, (name, spec) in zip(axes[:, 0], specs.items()):
        labels = [", ".join(g["names"] or map(str, g["classes"]))[:34] for g in spec["per_group"]] + ["all"]
        alone = [g["generalist_accuracy"] for g in spec["per_group"]] + [spec["generalist_test_accuracy"]]
        both = [g["combined_accuracy"] for g in spec["per_group"]] + [spec["combined_test_accuracy"]]
        y = range(len(labels))
        ax.barh([i - 0.2 for i in y], alone, height=0.4, label="parent alone", color="0.6")
        ax.barh([i + 0.2 for i in y], both, height=0.4, label="with specialists", color="tab:orange")
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.set_xlim(max(0.0, min(alone + both) - 0.05), 1.0)
        ax.invert_yaxis()
        ax.set_title(" ".join(SPECIALISTS[name]), fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("test accuracy on the images of each group's classes")
    fig.suptitle(f"Fashion-MNIST specialists ({prov['date'][:10]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "specialists.png", dpi=120)
    plt.close(fig)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "fmnist-students")
    ap.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "fmnist-students")
    ap.add_argument("--report", action="store_true", help="only the report, from the files of earlier steps")
    args = ap.parse_args()
    steps = commands(args.run, args.data_root, args.epochs)
    if not args.report:
        for output, cmd in steps:
            if output.is_file():
                continue
            print("running:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
    report(args.run, args.out, steps)


if __name__ == "__main__":
    main()
