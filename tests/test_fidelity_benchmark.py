"""The fitness-fidelity benchmark (experiments/fidelity.py), reduced, end to end on a user's task (digits)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fidelity_on_a_users_task_reports_every_setting_and_resumes(tmp_path):
    config = tmp_path / "task.yaml"
    config.write_text("parent: {epochs: 3}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "experiments" / "fidelity.py"), "--config", str(config), "--out", str(out),
           "--uniform", "3", "--random", "3", "--no-calibration"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "fidelity.json").read_text())
    assert result["n_genomes"] == 6 and len({g["key"] for g in result["genomes"]}) == 6
    assert all(0.0 < g["macs_ratio"] < 1.0 and 0.0 <= g["test_accuracy"] <= 1.0 for g in result["genomes"])
    rows = {(r["setting"], r["val_images"]): r for r in result["rows"]}
    assert (result["default"], 2000) in rows and ("size only", 2000) in rows
    for r in rows.values():
        assert -1.0 <= r["spearman"] <= 1.0 and r["seconds_per_genome"] >= 0.0
    # costs are measured: a longer fine-tune costs more than a shorter one
    cost = lambda s: rows[(s, 2000)]["seconds_per_genome"]  # noqa: E731
    assert cost("sgd lr=0.02 steps=100 abn=10") > cost("sgd lr=0.02 steps=20 abn=10") > cost("sgd lr=0.02 steps=0 abn=0")
    assert {h["screen"] for h in result["halving"]} >= {None, "sgd lr=0.02 steps=0 abn=10"}
    assert result["provenance"]["commit"] and result["provenance"]["torch"]
    assert (out / "fidelity.png").stat().st_size > 10_000
    assert result["default"] in (out / "fidelity.md").read_text()

    # a second call finds every unit done; another task in the same directory is refused
    units = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")} == units
    other = subprocess.run(cmd + ["--set", "parent.width=8"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert other.returncode != 0 and "another task" in other.stderr
