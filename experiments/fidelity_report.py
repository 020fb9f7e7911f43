"""fidelity.py's report: per fitness setting, cost and rank correlation with the final accuracy, a figure."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import moocore
import numpy as np
from scipy import stats

from evoprune.atomic import write_json

TARGETS = (0.10, 0.25, 0.50)
BIN = 1.10  # a size bin: two genomes whose MACs differ by at most 10%
WIDE_BIN = 1.25  # a wider one, for more pairs
ZERO_COST = "zero-cost: -KL to parent after abn=50"
VAL_SIZES = (500, 1000, 2000)
MAIN_VAL = 2  # index of 2,000 validation images, the size the comparison scores on
BOOTSTRAP = 1000


CHECKED = " +better of before"  # the better of the score before the fine-tune (after adaptive BN) and after it


def setting_name(optimizer: str, lr: float, steps: int, abn: int) -> str:
    """A fitness setting's name in the units and tables, e.g. 'sgd lr=0.05 steps=20 abn=10'."""
    return f"{optimizer} lr={lr} steps={steps} abn={abn}"


def parse_setting(name: str) -> tuple[str, str, int, int]:
    """`setting_name`'s parts (lr as written), from a name with or without CHECKED."""
    optimizer, lr, steps, abn = name.removesuffix(CHECKED).split()
    return optimizer, lr.split("=")[1], int(steps.split("=")[1]), int(abn.split("=")[1])


BEFORE = lambda abn: setting_name("sgd", 0.02, 0, abn)  # noqa: E731  (no fine-tune: the recipe is moot)
SCREENS = (BEFORE(10), BEFORE(50), ZERO_COST)


def with_checked(unit: dict) -> dict:
    """Add each fine-tuned setting's checked form, max(score before, score after): what a fitness that
    scored a regressed fine-tune by the better of the two would report. Its cost is that of
    `fitness.regression_check` (one more recalibration and scoring)."""
    scores = dict(unit["scores"])
    for name, after in unit["scores"].items():
        if name.startswith(("sgd", "adam")) and (parts := parse_setting(name))[2] and parts[3]:
            scores[name + CHECKED] = [max(b, a) for b, a in zip(unit["scores"][BEFORE(parts[3])], after)]
    return {**unit, "scores": scores}


@dataclass(frozen=True)
class Units:
    """What fidelity.py wrote, read once: the genomes with both a proxy and a final unit, in order."""

    genomes: list[dict]
    proxies: dict[str, dict]  # key -> proxy unit (with the checked scores added)
    finals: dict[str, dict]  # key -> final unit
    macs: np.ndarray  # each genome's MACs ratio
    final: np.ndarray  # each genome's final test accuracy

    def scores(self, setting: str, v: int = MAIN_VAL) -> np.ndarray:
        return np.array([self.proxies[g["key"]]["scores"][setting][v] for g in self.genomes])

    def seconds(self, setting: str, val_size: int = 2000) -> float:
        """The median measured cost of `setting` per genome."""
        return float(np.median([cost(setting, self.proxies[g["key"]]["seconds"], val_size) for g in self.genomes]))


def load(units: Path) -> Units:
    genomes = json.loads((units / "genomes.json").read_text())["genomes"]
    proxies = {p.stem[len("proxy-"):]: with_checked(json.loads(p.read_text())) for p in units.glob("proxy-*.json")}
    finals = {p.stem[len("final-"):]: json.loads(p.read_text()) for p in units.glob("final-*.json")}
    done = [g for g in genomes if g["key"] in proxies and g["key"] in finals]
    return Units(done, proxies, finals, np.array([g["macs_ratio"] for g in done]),
                 np.array([finals[g["key"]]["test_accuracy"] for g in done]))


def cost(setting: str, seconds: dict[str, float], val_size: int) -> float:
    """Measured seconds of one genome's setting: its fine-tune, its recalibration, scoring `val_size` images."""
    scoring = seconds["val"] * val_size / VAL_SIZES[-1]
    if setting == ZERO_COST:
        return seconds["abn 50"] + scoring
    if setting == "size only":
        return 0.0
    optimizer, lr, steps, abn = parse_setting(setting)
    once = seconds.get(f"abn {abn}", 0.0) + scoring  # recalibrate, score
    return seconds[f"ft {optimizer} {lr} {steps}"] + once * (2 if setting.endswith(CHECKED) else 1)


def within_bin_tau(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray, ratio: float = BIN) -> tuple[float, int]:
    """Kendall's tau over the pairs of genomes whose MACs differ by at most a factor `ratio` (ties count zero)."""
    i, j = np.triu_indices(len(proxy), 1)
    close = np.abs(np.log(macs[i] / macs[j])) <= math.log(ratio)
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


def partial_spearman(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray) -> float:
    """Spearman's correlation of proxy and final accuracy with size held fixed (partial on log MACs):
    how well the proxy ranks beyond what size alone tells, over all genomes."""
    columns = np.column_stack([proxy, final, np.log(macs)])
    if (np.ptp(columns, axis=0) == 0).any():  # a constant column (a small resample): no correlation
        return float("nan")
    r = stats.spearmanr(columns).statistic
    pf, ps, fs = r[0, 1], r[0, 2], r[1, 2]
    return float((pf - ps * fs) / math.sqrt(max(1e-12, (1 - ps ** 2) * (1 - fs ** 2))))


def metrics(proxy: np.ndarray, final: np.ndarray, macs: np.ndarray, rng: np.random.Generator) -> dict:
    tau_bin, pairs = within_bin_tau(proxy, final, macs)
    tau_wide, pairs_wide = within_bin_tau(proxy, final, macs, WIDE_BIN)
    boot_bin, boot_partial = [], []
    for _ in range(BOOTSTRAP):  # genomes resampled: how much each figure owes to this sample
        s = rng.integers(0, len(proxy), len(proxy))
        boot_bin.append(within_bin_tau(proxy[s], final[s], macs[s])[0])
        boot_partial.append(partial_spearman(proxy[s], final[s], macs[s]))
    ci = lambda b: [float(x) for x in np.nanpercentile(b, [2.5, 97.5])]  # noqa: E731
    return {"spearman": float(stats.spearmanr(proxy, final).statistic),
            "kendall": float(stats.kendalltau(proxy, final).statistic),
            "partial_spearman": partial_spearman(proxy, final, macs), "partial_spearman_ci": ci(boot_partial),
            "within_bin_kendall": tau_bin, "within_bin_ci": ci(boot_bin), "within_bin_pairs": pairs,
            "wide_bin_kendall": tau_wide, "wide_bin_pairs": pairs_wide,
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


def analyse(data: Units, default: str) -> dict:
    genomes, macs, final = data.genomes, data.macs, data.final
    settings = list(data.proxies[genomes[0]["key"]]["scores"])
    if default not in settings:
        raise ValueError(f"the default fitness ({default}) is not among the settings measured")
    rng = np.random.default_rng(0)
    rows = []
    for setting in settings + ["size only"]:
        for v, val_size in enumerate(VAL_SIZES):
            if setting == "size only" and v != MAIN_VAL:
                continue
            proxy = macs if setting == "size only" else data.scores(setting, v)
            rows.append({"setting": setting, "val_images": val_size, "seconds_per_genome": data.seconds(setting, val_size),
                         **metrics(proxy, final, macs, rng)})
    main = [r for r in rows if r["val_images"] == VAL_SIZES[MAIN_VAL] and not r["setting"].endswith(CHECKED)]
    front = []  # settings that rank better (size held fixed) than every cheaper one
    for r in sorted(main, key=lambda r: (r["seconds_per_genome"], -r["partial_spearman"])):
        if not front or r["partial_spearman"] > front[-1]["partial_spearman"]:
            front.append(r)
    regressed = {}  # fine-tunes that left the subnet below its own adaptive-BN score before them
    for setting in settings:
        if setting.endswith(CHECKED):
            after = data.scores(setting.removesuffix(CHECKED))
            regressed[setting.removesuffix(CHECKED)] = int((data.scores(setting) > after).sum())
    return {"n_genomes": len(genomes), "default": default,
            "genomes": [{**g, "test_accuracy": float(a)} for g, a in zip(genomes, final)],
            "rows": rows, "cost_front": [r["setting"] for r in front], "regressed": regressed,
            "final_recipe": {k: data.finals[genomes[0]["key"]][k] for k in ("epochs", "samples", "lr", "batch_size", "kd",
                                                                      "seed")}}


def halving_table(data: Units, screens: list[str], full: str, keeps=(0.25, 0.5)) -> list[dict]:
    full_cost = data.seconds(full)
    out = [{"screen": None, "keep": 1.0, "full": full, "relative_cost": 1.0,
            "pick_regret_points": pick_regret(data.scores(full), data.final, data.macs), "best_lost": 0}]
    for screen in screens:
        for keep in keeps:
            out.append({"screen": screen, "keep": keep, "full": full,
                        "relative_cost": (data.seconds(screen) + keep * full_cost) / full_cost,
                        **halving(data.scores(screen), data.scores(full), data.final, data.macs, keep)})
    return out


def markdown(result: dict, prov: dict) -> str:
    default = result["default"]
    main = sorted((r for r in result["rows"] if r["val_images"] == 2000 and not r["setting"].endswith(CHECKED)),
                  key=lambda r: r["seconds_per_genome"])
    recipe = result["final_recipe"]
    lines = [f"# Fitness fidelity on Fashion-MNIST: {result['n_genomes']} ResNet-20 subnets", "",
             f"Each subnet's final accuracy: KD fine-tune of {recipe['epochs']} epochs on {recipe['samples']:,} train "
             f"images (lr {recipe['lr']}, batch {recipe['batch_size']}, {recipe['kd']} KD, seed {recipe['seed']}), then "
             "test accuracy on the 10,000 test images. Each setting's score: validation accuracy on 2,000 images "
             "(unless said) after the setting's KD fine-tune (`steps`, optimiser, `lr`) and `abn` batches of adaptive "
             "BN. Cost: median measured seconds per genome on one thread (fine-tune + recalibration + scoring).", "",
             "- *partial*: Spearman's correlation with size held fixed (partial on log MACs): ranking beyond size, "
             "over all subnets; 95% bootstrap interval over subnets.",
             "- *within-bin*: Kendall's tau over the pairs of subnets whose MACs differ by at most 10% "
             "(*wide*: 25%), with the number of pairs.",
             "- *regret*: points of final accuracy lost against the best subnet at or under 10/25/50% of the MACs "
             "when the setting's best subnet there is picked (mean of the three).", "",
             f"The default fitness is **{default}**.", "",
             "| setting | s/genome | Spearman | Kendall | partial [95%] | within-bin tau [95%] (pairs) | wide (pairs) "
             "| regret |", "|---|---|---|---|---|---|---|---|"]
    for r in main:
        name = f"**{r['setting']}**" if r["setting"] == default else r["setting"]
        (plo, phi), (lo, hi) = r["partial_spearman_ci"], r["within_bin_ci"]
        lines.append(f"| {name} | {r['seconds_per_genome']:.1f} | {r['spearman']:.3f} | {r['kendall']:.3f} | "
                     f"{r['partial_spearman']:.3f} [{plo:.2f}, {phi:.2f}] | {r['within_bin_kendall']:.3f} "
                     f"[{lo:.2f}, {hi:.2f}] ({r['within_bin_pairs']}) | {r['wide_bin_kendall']:.3f} "
                     f"({r['wide_bin_pairs']}) | {r['pick_regret_points']:.2f} |")
    lines += ["", "Settings that rank better (partial) than every cheaper one: "
              + ", ".join(f"`{s}`" for s in result["cost_front"]), "",
              "Validation size (fewer images: cheaper scoring, noisier):", "",
              "| setting | images | s/genome | Spearman | partial | within-bin tau | regret |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["setting"] == default:
            lines.append(f"| {default} | {r['val_images']} | {r['seconds_per_genome']:.1f} | {r['spearman']:.3f} | "
                         f"{r['partial_spearman']:.3f} | {r['within_bin_kendall']:.3f} | {r['pick_regret_points']:.2f} |")
    regressed = {k: v for k, v in result["regressed"].items() if v}
    lines += ["", f"Fine-tunes that ended below the same subnet's adaptive-BN score before them (of "
              f"{result['n_genomes']}): " + (", ".join(f"`{k}`: {v}" for k, v in regressed.items()) or "none, in any "
                                               "setting with a fine-tune and adaptive BN")]
    rows = {r["setting"]: r for r in result["rows"] if r["val_images"] == 2000}
    if default + CHECKED in rows:
        plain, checked = rows[default], rows[default + CHECKED]
        lines += ["", f"The default's regression check (`fitness.regression_check`: one more recalibration and "
                  f"scoring) costs {checked['seconds_per_genome']:.1f} s per genome instead of "
                  f"{plain['seconds_per_genome']:.1f} s. Scoring a regressed fine-tune by the better of the two "
                  f"scores would rank with partial Spearman {checked['partial_spearman']:.3f} (regret "
                  f"{checked['pick_regret_points']:.2f}) against {plain['partial_spearman']:.3f} "
                  f"({plain['pick_regret_points']:.2f}) for the score after the fine-tune."]
    lines += ["", "Two stages (successive halving): the screen scores every subnet, the best share by non-dominated "
              "rank of (screen score, MACs) get the full setting, the picks come from those:", "",
              "| screen | kept | full | cost vs full alone | regret (pts) | best subnet at a target discarded |",
              "|---|---|---|---|---|---|"]
    for h in result["halving"]:
        lines.append(f"| {h['screen'] or '-'} | {h['keep']:.0%} | {h['full']} | {h['relative_cost']:.2f} | "
                     f"{h['pick_regret_points']:.2f} | {h['best_lost']} of {len(TARGETS)} |")
    lines += ["", "## Provenance", "", "```", json.dumps(prov, indent=1), "```", ""]
    return "\n".join(lines)


def short(setting: str) -> str:
    """'sgd lr=0.05 steps=20 abn=10' -> 'SGD 0.05, 20 steps, ABN 10'."""
    if not setting.startswith(("sgd", "adam")):
        return setting
    optimizer, lr, steps, abn = parse_setting(setting)
    return (f"{'SGD' if optimizer == 'sgd' else 'Adam'} {lr}, {steps} steps, ABN {abn}"
            + (CHECKED if setting.endswith(CHECKED) else ""))


def plot(result: dict, data: Units, path: Path, panels: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = (len(panels) + 2) // 2
    fig, axes = plt.subplots(2, ncol, figsize=(4.0 * ncol, 8.4), layout="constrained")
    axes = axes.ravel()
    rows = {r["setting"]: r for r in result["rows"] if r["val_images"] == 2000}
    for ax, setting in zip(axes, panels):
        sc = ax.scatter(data.scores(setting), data.final, c=np.log10(data.macs), cmap="viridis", s=18,
                        vmin=np.log10(0.04), vmax=np.log10(0.9))
        r = rows[setting]
        bold = " (default)" if setting == result["default"] else ""
        ax.set_title(f"{short(setting)}{bold}\nSpearman {r['spearman']:.2f}, partial {r['partial_spearman']:.2f}",
                     fontsize=9)
        ax.set_xlabel("fitness score (validation accuracy)", fontsize=8)
        ax.set_ylabel("final test accuracy", fontsize=8)
    cb = fig.colorbar(sc, ax=axes[:len(panels)].tolist(), shrink=0.6)
    ticks = [0.05, 0.1, 0.2, 0.4, 0.8]
    cb.set_ticks(np.log10(ticks), labels=[f"{t:.0%}" for t in ticks])
    cb.set_label("MACs of the parent's")
    ax = axes[len(panels)]
    for r in rows.values():
        if not r["setting"].endswith(CHECKED):
            ax.scatter(r["seconds_per_genome"], r["partial_spearman"], s=10, color="tab:blue")
    for s in dict.fromkeys(["size only", result["default"]] + panels):
        ax.scatter(rows[s]["seconds_per_genome"], rows[s]["partial_spearman"], s=16, color="crimson")
        ax.annotate(short(s), (rows[s]["seconds_per_genome"], rows[s]["partial_spearman"]), fontsize=6,
                    textcoords="offset points", xytext=(4, -3))
    ax.set_xlabel("seconds per genome (one thread)", fontsize=8)
    ax.set_ylabel("partial Spearman (size held fixed)", fontsize=8)
    ax.set_title("cost against ranking beyond size", fontsize=8)
    for ax in axes[len(panels) + 1:]:
        ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(out: Path, units: Path, prov: dict, default: str) -> dict:
    """fidelity.json, fidelity.md and fidelity.png from the units written; `default`: evoprune's default setting."""
    data = load(units)
    result = analyse(data, default)
    result["halving"] = halving_table(data, list(SCREENS), default)
    result["provenance"] = prov
    write_json(out / "fidelity.json", result)
    (out / "fidelity.md").write_text(markdown(result, prov))
    old = lambda steps, abn: setting_name("sgd", 0.02, steps, abn)  # noqa: E731  (the recipe of the old default)
    panels = list(dict.fromkeys([old(0, 0), old(0, 10), old(20, 0), old(20, 10), default, old(100, 10)]))
    plot(result, data, out / "fidelity.png", panels)
    return result
