"""fidelity.py's report: per fitness setting, cost and rank correlation with the final accuracy, a figure."""
from __future__ import annotations

import json
import math
from pathlib import Path

import moocore
import numpy as np
from scipy import stats

from evoprune.atomic import write_json

TARGETS = (0.10, 0.25, 0.50)
BIN = 1.10  # a size bin: two genomes whose MACs differ by at most 10%
VAL_SIZES = (500, 1000, 2000)
MAIN_VAL = 2  # index of 2,000 validation images, the size the comparison scores on
BOOTSTRAP = 1000


def load(units: Path) -> tuple[list[dict], dict[str, dict], dict[str, dict]]:
    genomes = json.loads((units / "genomes.json").read_text())["genomes"]
    proxies = {p.stem[len("proxy-"):]: json.loads(p.read_text()) for p in units.glob("proxy-*.json")}
    finals = {p.stem[len("final-"):]: json.loads(p.read_text()) for p in units.glob("final-*.json")}
    done = [g for g in genomes if g["key"] in proxies and g["key"] in finals]
    return done, proxies, finals


def cost(setting: str, seconds: dict[str, float], val_size: int) -> float:
    """Measured seconds of one genome's setting: its fine-tune, its recalibration, scoring `val_size` images."""
    if setting.startswith("zero-cost"):
        return seconds["abn 50"] + seconds["val"] * val_size / VAL_SIZES[-1]
    if setting == "size only":
        return 0.0
    opt, lr, steps, abn = (part.split("=")[-1] for part in setting.split())
    return (seconds[f"ft {opt} {lr} {steps}"] + (seconds[f"abn {abn}"] if abn != "0" else 0.0)
            + seconds["val"] * val_size / VAL_SIZES[-1])


def within_bin_tau(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray) -> tuple[float, int]:
    """Kendall's tau over the pairs of genomes whose MACs differ by at most 10% (ties count zero)."""
    i, j = np.triu_indices(len(proxy), 1)
    close = np.abs(np.log(macs[i] / macs[j])) <= math.log(BIN)
    i, j = i[close], j[close]
    if len(i) == 0:
        return float("nan"), 0
    agree = np.sign(proxy[i] - proxy[j]) * np.sign(final[i] - final[j])
    return float(agree.mean()), int(len(i))


def pick_regret(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray, kept: np.ndarray | None = None) -> float:
    """Mean over targets of (best final at or under the target) - (final of the best proxy there), points."""
    kept = np.ones(len(proxy), bool) if kept is None else kept
    out = []
    for target in TARGETS:
        under = macs <= target
        if not (under & kept).any():
            continue
        chosen = np.flatnonzero(under & kept)[np.argmax(proxy[under & kept])]
        out.append(final[under].max() - final[chosen])
    return 100 * float(np.mean(out))


def metrics(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray, rng: np.random.Generator) -> dict:
    tau_bin, pairs = within_bin_tau(proxy, final, macs)
    boot = []
    for _ in range(BOOTSTRAP):  # genomes resampled: how much the within-bin tau owes to the sample
        s = rng.integers(0, len(proxy), len(proxy))
        boot.append(within_bin_tau(proxy[s], final[s], macs[s])[0])
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"spearman": float(stats.spearmanr(proxy, final).statistic),
            "kendall": float(stats.kendalltau(proxy, final).statistic),
            "within_bin_kendall": tau_bin, "within_bin_ci": [float(lo), float(hi)], "within_bin_pairs": pairs,
            "pick_regret_points": pick_regret(proxy, final, macs)}


def halving(screen: np.ndarray, full: np.ndarray, final: np.ndarray, macs: np.ndarray, keep: float) -> dict:
    """Two stages: the cheap `screen` scores every genome, the best `keep` share by non-dominated rank
    of (screen score, MACs) go on to the `full` setting, and the picks come from those."""
    rank = moocore.pareto_rank(np.column_stack([screen, macs]), maximise=[True, False])
    order = np.lexsort((-screen, rank))  # front by front, the better screen score first within one
    kept = np.zeros(len(screen), bool)
    kept[order[:math.ceil(keep * len(screen))]] = True
    return {"kept": int(kept.sum()), "pick_regret_points": pick_regret(full, final, macs, kept),
            "best_lost": int(sum(not kept[np.flatnonzero(macs <= t)[np.argmax(final[macs <= t])]] for t in TARGETS))}


def analyse(units: Path) -> dict:
    genomes, proxies, finals = load(units)
    keys = [g["key"] for g in genomes]
    macs = np.array([g["macs_ratio"] for g in genomes])
    final = np.array([finals[k]["test_accuracy"] for k in keys])
    settings = list(proxies[keys[0]]["scores"])
    rng = np.random.default_rng(0)
    rows = []
    for setting in settings + ["size only"]:
        for v, val_size in enumerate(VAL_SIZES):
            if setting == "size only" and v != MAIN_VAL:
                continue
            proxy = macs if setting == "size only" else np.array([proxies[k]["scores"][setting][v] for k in keys])
            seconds = float(np.median([cost(setting, proxies[k]["seconds"], val_size) for k in keys]))
            rows.append({"setting": setting, "val_images": val_size, "seconds_per_genome": seconds,
                         **metrics(proxy, final, macs, rng)})
    main = [r for r in rows if r["val_images"] == VAL_SIZES[MAIN_VAL]]
    front = []
    for r in sorted(main, key=lambda r: (r["seconds_per_genome"], -r["within_bin_kendall"])):
        if not front or r["within_bin_kendall"] > front[-1]["within_bin_kendall"]:
            front.append(r)
    # regressions: the fine-tune left the subnet below its own adaptive-BN score before it
    regressed = {}
    for steps in (20, 40, 100):
        for abn in (10, 20, 50):
            before = np.array([proxies[k]["scores"][f"sgd lr=0.02 steps=0 abn={abn}"][MAIN_VAL] for k in keys])
            after = np.array([proxies[k]["scores"][f"sgd lr=0.02 steps={steps} abn={abn}"][MAIN_VAL] for k in keys])
            regressed[f"steps={steps} abn={abn}"] = int((after < before).sum())
    return {"n_genomes": len(genomes), "genomes": [{**g, "test_accuracy": finals[g["key"]]["test_accuracy"]}
                                                   for g in genomes],
            "rows": rows, "cost_front": [r["setting"] for r in front], "regressed": regressed,
            "final_recipe": {k: finals[keys[0]][k] for k in ("epochs", "samples", "lr", "batch_size", "kd", "seed")}}


def halving_table(units: Path, screens: list[str], full: str, keeps=(0.25, 0.5)) -> list[dict]:
    genomes, proxies, finals = load(units)
    keys = [g["key"] for g in genomes]
    macs = np.array([g["macs_ratio"] for g in genomes])
    final = np.array([finals[k]["test_accuracy"] for k in keys])
    col = lambda s: np.array([proxies[k]["scores"][s][MAIN_VAL] for k in keys])  # noqa: E731
    full_cost = float(np.median([cost(full, proxies[k]["seconds"], 2000) for k in keys]))
    out = [{"screen": None, "keep": 1.0, "full": full, "relative_cost": 1.0,
            "pick_regret_points": pick_regret(col(full), final, macs), "best_lost": 0}]
    for screen in screens:
        screen_cost = float(np.median([cost(screen, proxies[k]["seconds"], 2000) for k in keys]))
        for keep in keeps:
            out.append({"screen": screen, "keep": keep, "full": full,
                        "relative_cost": (screen_cost + keep * full_cost) / full_cost,
                        **halving(col(screen), col(full), final, macs, keep)})
    return out


def markdown(result: dict, prov: dict) -> str:
    main = sorted((r for r in result["rows"] if r["val_images"] == 2000), key=lambda r: -r["within_bin_kendall"])
    lines = [f"# Fitness fidelity on Fashion-MNIST ({result['n_genomes']} ResNet-20 subnets)", "",
             f"Final: {result['final_recipe']}; test accuracy on 10,000 images. Proxy scored on 2,000 validation "
             "images unless said. Cost: median measured seconds per genome on one thread. Within-bin: Kendall's tau "
             "over pairs whose MACs differ by at most 10% (95% bootstrap interval over genomes). Pick regret: points "
             "lost against the best genome at or under 10/25/50% of the MACs when the best proxy there is picked.", "",
             "| setting | s/genome | Spearman | Kendall | within-bin tau | pairs | pick regret (pts) |",
             "|---|---|---|---|---|---|---|"]
    for r in main:
        lo, hi = r["within_bin_ci"]
        lines.append(f"| {r['setting']} | {r['seconds_per_genome']:.1f} | {r['spearman']:.3f} | {r['kendall']:.3f} | "
                     f"{r['within_bin_kendall']:.3f} [{lo:.2f}, {hi:.2f}] | {r['within_bin_pairs']} | "
                     f"{r['pick_regret_points']:.2f} |")
    lines += ["", "Cheapest settings that rank better than every cheaper one (within bins): "
              + ", ".join(f"`{s}`" for s in result["cost_front"]), "",
              "Validation size (fewer images: cheaper scoring, noisier):", "",
              "| setting | images | s/genome | Spearman | within-bin tau | pick regret |", "|---|---|---|---|---|---|"]
    for s in result["cost_front"][-3:]:
        for r in result["rows"]:
            if r["setting"] == s:
                lines.append(f"| {s} | {r['val_images']} | {r['seconds_per_genome']:.1f} | {r['spearman']:.3f} | "
                             f"{r['within_bin_kendall']:.3f} | {r['pick_regret_points']:.2f} |")
    lines += ["", "Fine-tunes that ended below the same subnet's adaptive-BN score before them (of "
              f"{result['n_genomes']}): " + ", ".join(f"{k}: {v}" for k, v in result["regressed"].items())]
    if result.get("halving"):
        lines += ["", "Two stages (successive halving): the screen scores all, the best share by non-dominated "
                  "rank of (screen score, MACs) get the full setting:", "",
                  "| screen | kept | full | cost vs full alone | pick regret (pts) | best genome at a target lost |",
                  "|---|---|---|---|---|---|"]
        for h in result["halving"]:
            lines.append(f"| {h['screen'] or '-'} | {h['keep']:.0%} | {h['full']} | {h['relative_cost']:.2f} | "
                         f"{h['pick_regret_points']:.2f} | {h['best_lost']} |")
    lines += ["", "## Provenance", "", "```", json.dumps(prov, indent=1), "```", ""]
    return "\n".join(lines)


def plot(result: dict, units: Path, path: Path, panels: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    genomes, proxies, finals = load(units)
    keys = [g["key"] for g in genomes]
    macs = np.array([g["macs_ratio"] for g in genomes])
    final = np.array([finals[k]["test_accuracy"] for k in keys])
    fig, axes = plt.subplots(2, (len(panels) + 2) // 2, figsize=(4.2 * ((len(panels) + 2) // 2), 8))
    axes = axes.ravel()
    rows = {r["setting"]: r for r in result["rows"] if r["val_images"] == 2000}
    for ax, setting in zip(axes, panels):
        proxy = np.array([proxies[k]["scores"][setting][MAIN_VAL] for k in keys])
        sc = ax.scatter(proxy, final, c=np.log10(macs), cmap="viridis", s=18)
        r = rows[setting]
        ax.set_title(f"{setting}\nSpearman {r['spearman']:.2f}, within-bin tau {r['within_bin_kendall']:.2f}",
                     fontsize=8)
        ax.set_xlabel("fitness score (validation accuracy)", fontsize=8)
        ax.set_ylabel("final test accuracy", fontsize=8)
    cb = fig.colorbar(sc, ax=axes[:len(panels)].tolist(), shrink=0.6)
    cb.set_label("log10 MACs ratio")
    ax = axes[len(panels)]
    for r in rows.values():
        ax.scatter(r["seconds_per_genome"], r["within_bin_kendall"], s=10, color="tab:blue")
    for s in result["cost_front"]:
        ax.annotate(s.replace("sgd lr=0.02 ", ""), (rows[s]["seconds_per_genome"], rows[s]["within_bin_kendall"]),
                    fontsize=6)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("seconds per genome (one thread)", fontsize=8)
    ax.set_ylabel("within-bin Kendall tau", fontsize=8)
    ax.set_title("cost against ranking within size bins", fontsize=8)
    for ax in axes[len(panels) + 1:]:
        ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(out: Path, units: Path, prov: dict, full: str | None = None,
                 panels: list[str] | None = None) -> dict:
    result = analyse(units)
    full = full or result["cost_front"][-1]
    screens = [s for s in result["cost_front"] if s != full][:3]
    result["halving"] = halving_table(units, screens, full)
    result["provenance"] = prov
    write_json(out / "fidelity.json", result)
    (out / "fidelity.md").write_text(markdown(result, prov))
    panels = panels or ["sgd lr=0.02 steps=0 abn=0", "sgd lr=0.02 steps=0 abn=50", "sgd lr=0.02 steps=20 abn=0",
                        "sgd lr=0.02 steps=20 abn=10", "sgd lr=0.02 steps=40 abn=20", "sgd lr=0.02 steps=100 abn=50"]
    plot(result, units, out / "fidelity.png", panels)
    return result
