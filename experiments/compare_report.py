"""The comparison's tables and figure, rebuilt from its unit files (results/compare-TASK/units)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, stdev

from evoprune.atomic import write_json, write_text
from evoprune.evolve import front_indices
from evoprune.objectives import Objectives

BASELINES = ("uniform", "global", "random", "scalar_ga")
# two-sided 95% Student t quantiles by degrees of freedom (the seeds' mean has few of them)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (one pick's test accuracy)."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def seeds_ci(values: list[float]) -> float:
    """Half-width of the 95% t interval of the mean over seeds (nan for a single seed)."""
    if len(values) < 2:
        return float("nan")
    return T95.get(len(values) - 1, 1.96) * stdev(values) / math.sqrt(len(values))


def load_units(units: Path) -> tuple[dict, dict, list[dict], dict]:
    setup = json.loads((units / "setup.json").read_text())
    parent = json.loads((units / "parent.json").read_text()) if (units / "parent.json").is_file() else {}
    searches = [json.loads(p.read_text()) for p in sorted(units.glob("search-seed*.json"))]
    finals = {(f["seed"], f["key"]): f for f in (json.loads(p.read_text()) for p in units.glob("final-seed*.json"))}
    return setup, parent, searches, finals


def table_rows(searches: list[dict], finals: dict, targets: list[float]) -> list[dict]:
    """One row per seed x method x target: the pick's size, validation and test accuracy."""
    rows = []
    for s in searches:
        for t in targets:
            p = s["picks"].get(str(t))
            f = finals.get((s["seed"], p["key"])) if p else None
            row = {"seed": s["seed"], "method": s["method"], "target": t, "evaluations": s["evaluations"]}
            if p:
                row.update(macs_ratio=p["objectives"]["macs_ratio"], params_ratio=p["objectives"]["params_ratio"],
                           val_accuracy=p["objectives"]["accuracy"], key=p["key"])
            if f:
                lo, hi = wilson(f["test_correct"], f["n_test"])
                row.update(test_accuracy=f["test_accuracy"], test_ci95=[lo, hi])
            rows.append(row)
    return rows


def verdicts(rows: list[dict], searches: list[dict], targets: list[float], candidate: str = "evoprune") -> dict:
    """Per target: `candidate`'s (evoprune's, or a variant's) margin over the best baseline (mean test accuracy over the seeds where each
    has a pick) and the seeds where it beats every baseline (a baseline without a pick under the target
    loses; evoprune without one loses to all); and the seeds where its hypervolume beats every baseline's.
    `searches` holds only seeds whose every method has finished (write_report drops the others)."""
    # only the seeds the candidate ran: a lever tried on fewer seeds is compared on those alone
    seeds = sorted({s["seed"] for s in searches if s["method"] == candidate})
    methods = (candidate,) + BASELINES
    out: dict = {"targets": {}, "hypervolume_wins": None}
    test = {(r["seed"], r["method"], r["target"]): r.get("test_accuracy") for r in rows}
    for t in targets:
        final = [s for s in seeds if not any("key" in r and "test_accuracy" not in r for r in rows
                                             if r["seed"] == s and r["target"] == t and r["method"] in methods)]
        if not final:
            continue
        means = {m: mean(v) for m in methods if (v := [test[(s, m, t)] for s in final if test.get((s, m, t)) is not None])}
        baselines = [m for m in BASELINES if m in means]
        best = max(baselines, key=means.get) if baselines else None
        wins = [s for s in final if test.get((s, candidate, t)) is not None and all(
            test.get((s, b, t)) is None or test[(s, candidate, t)] > test[(s, b, t)] for b in BASELINES)]
        margin = 100 * (means[candidate] - means[best]) if best and candidate in means else None
        out["targets"][str(t)] = {"seeds": final, "best_baseline": best, "margin_points": margin,
                                  "wins_every_baseline_in_seeds": wins,
                                  "goal_met": len(wins) == len(final) and margin is not None and round(margin, 6) >= 1.0}
    hv = {(s["seed"], s["method"]): s["hypervolume_val"] for s in searches}
    if seeds:
        out["hypervolume_wins"] = {"seeds": seeds, "wins": [s for s in seeds if all(
            (s, candidate) in hv and hv[(s, candidate)] > hv[(s, b)] for b in BASELINES)]}
    return out


def variants(searches: list[dict]) -> list[str]:
    """The methods in the units that are evoprune with a lever (compare.py's LEVERS): neither evoprune nor a baseline."""
    return sorted({s["method"] for s in searches} - {"evoprune", *BASELINES})


def verdict_of(verdict: dict) -> dict[str, dict]:
    """evoprune's verdict and each variant's, by name."""
    return {"evoprune": verdict, **verdict.get("variants", {})}


def markdown(meta: dict, setup: dict, parent: dict, searches: list[dict], rows: list[dict], verdict: dict,
             finals: dict) -> str:
    methods = [m for m in ["evoprune", *variants(searches), *BASELINES] if any(s["method"] == m for s in searches)]
    seeds = sorted({s["seed"] for s in searches})
    lines = [f"# Search quality on {setup['task']}: evoprune against the baselines at equal evaluations", "",
             f"- Command: `{meta['command']}`", f"- Commit: `{meta['commit']}`, torch {meta['torch']}, "
             f"{meta['machine']['cpu']} ({meta['machine']['cores']} cores), {meta['date']}",
             f"- Calibration: {meta.get('calibration')}",
             f"- Searches made at commit(s) "
             f"{', '.join(sorted({u['provenance']['commit'] for u in searches if 'provenance' in u})) or '–'}; "
             f"final fine-tunes at {', '.join(sorted({f['provenance']['commit'] for f in finals.values()})) or '–'}",
             f"- Config overrides: `{' '.join(setup['overrides'])}`",
             f"- Budget: {setup['budget']} fitness evaluations per method and seed (asserted); final KD fine-tune of "
             f"every pick: {setup['final']['epochs']} epoch(s) on {setup['final']['samples']} train images at lr "
             f"{setup['final'].get('lr', 'distill.lr')}, the same "
             "recipe and seed for all", ""]
    if parent:
        lines += [f"Parent: test accuracy {parent['test_accuracy']:.4f} on {parent['n_test']} test images, "
                  f"validation {parent['val_accuracy']:.4f}.", ""]
    lines += ["## Evaluations", "", "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | note |",
              "|---|" + "---|" * (len(seeds) + 1)]
    for m in methods:
        units = {s["seed"]: s for s in searches if s["method"] == m}
        note = ""
        if m in ("uniform", "global"):
            crits = sorted({u["criterion"] for u in units.values()})
            pilot = sorted({u["pilot"]["evaluations"] for u in units.values()})
            note = (f"criterion {'/'.join(crits)}, chosen by a pilot at matched sizes that took "
                    f"{'/'.join(map(str, pilot))} of the evaluations")
        if m == "scalar_ga":
            note = f"lambda {next(iter(units.values()))['scalar_lambda']}"
        lines.append(f"| {m} | " + " | ".join(str(units[s]["evaluations"]) if s in units else "–" for s in seeds)
                     + f" | {note} |")
    for t in setup["targets"]:
        lines += ["", f"## At most {t:.0%} of the parent's MACs", "",
                  "Test accuracy after the same final KD fine-tune (95% Wilson interval over the test images), "
                  "the pick's MACs ratio; mean over seeds with a 95% t interval.", "",
                  "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---|" + "---|" * (len(seeds) + 1)]
        for m in methods:
            cells, accs = [], []
            for s in seeds:
                r = next((r for r in rows if r["seed"] == s and r["method"] == m and r["target"] == t), None)
                if r is None or "test_accuracy" not in r:
                    cells.append("none under the target" if r is not None and "key" not in r else "–")
                    continue
                accs.append(r["test_accuracy"])
                lo, hi = r["test_ci95"]
                cells.append(f"{r['test_accuracy']:.4f} [{lo:.3f}, {hi:.3f}] ({r['macs_ratio']:.3f})")
            avg = (f"{mean(accs):.4f}" + (f" ± {seeds_ci(accs):.4f}" if len(accs) > 1 else "")) if accs else "–"
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {avg} |")
        for candidate, cv in verdict_of(verdict).items():
            v = cv["targets"].get(str(t))
            if v:
                margin = "no pick" if v["margin_points"] is None else f"{v['margin_points']:+.2f} points"
                lines += ["", f"{candidate} vs the best baseline ({v['best_baseline']}): {margin} "
                          f"(mean over seeds {v['seeds']}); above every baseline in seeds "
                          f"{v['wins_every_baseline_in_seeds'] or 'none'}. Goal (+1 point on average and above in "
                          f"every seed): **{'met' if v['goal_met'] else 'not met'}**."]
    lines += ["", "## Hypervolume", "", "Of (validation accuracy, MACs ratio) over every evaluated genome, reference "
              "(0, 1), on the validation subset the fitness scores (the split the adaptive methods select on, "
              "which favours them over a fixed sweep).", "",
              "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for m in methods:
        hv = {s["seed"]: s["hypervolume_val"] for s in searches if s["method"] == m}
        lines.append(f"| {m} | " + " | ".join(f"{hv[s]:.4f}" if s in hv else "–" for s in seeds) + " |")
    for candidate, cv in verdict_of(verdict).items():
        if cv["hypervolume_wins"]:
            w = cv["hypervolume_wins"]
            lines += ["", f"{candidate}'s hypervolume is above every baseline's in seeds {w['wins'] or 'none'} "
                      f"of {w['seeds']}."]
    return "\n".join(lines) + "\n"


def plot(searches: list[dict], targets: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({s["seed"] for s in searches})
    fig, axes = plt.subplots(1, len(seeds), figsize=(max(7.0, 5.2 * len(seeds)), 4.8), squeeze=False, sharey=True)
    colors = dict(zip(["evoprune", *BASELINES, *variants(searches)], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, seed in zip(axes[0], seeds):
        for s in (s for s in searches if s["seed"] == seed):
            objs = [Objectives.from_json(o) for o in s["objectives"]]
            ax.scatter([o.macs_ratio for o in objs], [o.accuracy for o in objs], s=8, alpha=0.35,
                       color=colors[s["method"]])
            front = sorted((objs[i].macs_ratio, objs[i].accuracy) for i in front_indices(objs))
            ax.plot(*zip(*front), drawstyle="steps-post", color=colors[s["method"]], label=s["method"])
        for t in targets:
            ax.axvline(t, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("MACs ratio to the parent (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy after the fitness fine-tune")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, units: Path, meta: dict) -> None:
    setup, parent, searches, finals = load_units(units)
    # only seeds whose every method has finished enter the tables: a partial seed would skew the means
    done: dict[int, set[str]] = {}
    for s in searches:
        done.setdefault(s["seed"], set()).add(s["method"])
    partial = sorted(seed for seed, methods in done.items() if not methods >= {"evoprune", *BASELINES})
    searches = [s for s in searches if s["seed"] not in partial]
    rows = table_rows(searches, finals, setup["targets"])
    verdict = verdicts(rows, searches, setup["targets"])
    if variants(searches):
        verdict["variants"] = {m: verdicts(rows, searches, setup["targets"], m) for m in variants(searches)}
    write_json(out / "compare.json", {**meta, "setup": setup, "parent": parent, "rows": rows, "verdict": verdict,
                                      "seeds_in_progress": partial,
                                      "searches": [{k: v for k, v in s.items() if k != "objectives"}
                                                   for s in searches]})
    text = markdown(meta, setup, parent, searches, rows, verdict, finals)
    if partial:
        text += f"\nSeed(s) {', '.join(map(str, partial))}: not every method has finished; their units are kept, not shown.\n"
    write_text(out / "compare.md", text)
    if searches:
        plot(searches, setup["targets"], out / "fronts.png",
             f"{setup['task']}: every evaluated genome and each method's front\n"
             f"({setup['budget']} evaluations per method; dotted: the MACs targets)")
