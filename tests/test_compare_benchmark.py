"""The comparison benchmark (experiments/compare.py), reduced, end to end: on digits, and on Fashion-MNIST
where Debian's dataset-fashion-mnist is installed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
BUDGET = 32  # the sweeps' pilots take 18 of it
COMMON = ["--seeds", "0", "--budget", str(BUDGET), "--final-epochs", "1", "--no-calibration",
          "--set", "fitness.steps=4", "--set", "fitness.adaptive_bn=2", "--set", "fitness.batch_size=32"]
REDUCED = {
    "digits": ["--final-samples", "600", "--set", "parent.epochs=3", "--set", "fitness.finetune_samples=128"],
    "fmnist": ["--final-samples", "256", "--set", "data.max_train_samples=1500", "--set", "data.max_eval_samples=400",
               "--set", "parent.epochs=1", "--set", "parent.width=8", "--set", "fitness.finetune_samples=256",
               "--set", "fitness.val_samples=200"],
}
fmnist_missing = not all((FMNIST / f).is_file() for f in FILES)


@pytest.mark.slow
@pytest.mark.parametrize("task", [
    "digits",
    pytest.param("fmnist", marks=pytest.mark.skipif(
        fmnist_missing, reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")),
])
def test_reduced_comparison_gives_every_method_the_same_evaluations_and_resumes(task, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "compare.py"), "--task", task, "--out", str(tmp_path),
           *COMMON, *REDUCED[task]]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["commit"] and result["torch"] and result["date"] and result["command"].startswith("python ")
    methods = {"uniform", "global", "random", "scalar_ga", "evoprune", "evoprune_uniform", "evoprune_pop8",
               "evoprune_ranked"}
    assert {s["method"] for s in result["searches"]} == methods
    assert {s["evaluations"] for s in result["searches"]} == {BUDGET}
    for s in result["searches"]:
        assert s["provenance"]["commit"] and s["provenance"]["torch"]
        if s["method"] in ("uniform", "global"):
            assert s["criterion"] in s["pilot"]["mean_val_accuracy"] and 0 < s["pilot"]["evaluations"] < BUDGET
    for row in result["rows"]:  # every pick is within its target and was scored on the test split
        if "key" in row:
            assert row["macs_ratio"] <= row["target"] + 1e-9
            assert row["test_ci95"][0] <= row["test_accuracy"] <= row["test_ci95"][1]
    assert any("test_accuracy" in r for r in result["rows"] if r["method"] == "evoprune")
    assert (tmp_path / "fronts.png").stat().st_size > 10_000
    text = (tmp_path / "compare.md").read_text()
    assert f"{BUDGET} fitness evaluations per method" in text and result["commit"] in text

    # a second call finds every unit done: no unit is rewritten and the tables are the same
    units = {p: p.stat().st_mtime_ns for p in (tmp_path / "units").glob("*.json")}
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "units").glob("*.json")} == units
    assert json.loads((tmp_path / "compare.json").read_text())["rows"] == result["rows"]

    # other settings in the same directory are refused rather than mixed in
    other = subprocess.run(cmd[:-1] + ["fitness.batch_size=16"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert other.returncode != 0 and "other settings" in other.stderr
