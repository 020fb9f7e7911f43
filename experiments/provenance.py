"""What every results file records: the command, git commit, torch version, machine, its calibration and the date."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIBRATE = ROOT.parent / "shared" / "tools" / "calibrate.py"  # this project's machine-speed yardstick


def git_commit() -> str:
    """HEAD's hash, with '+dirty' when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def calibration() -> str | None:
    """The line ../shared/tools/calibrate.py prints (ms per ResNet-20 training step; the machine's speed
    against the reference), run in a child process; None where the tool is absent."""
    if not CALIBRATE.is_file():
        return None
    done = subprocess.run([sys.executable, str(CALIBRATE)], capture_output=True, text=True, timeout=600)
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return line if re.search(r"\d+ ms", line) else None


def provenance(calibrate: bool = True) -> dict:
    import torch

    return {"command": "python " + " ".join(sys.argv), "commit": git_commit(),
            "date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                                             "platform": platform.platform()},
            "calibration": calibration() if calibrate else None}
