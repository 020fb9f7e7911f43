"""The machine's load, and the OpenMP wait policy that suits it (chosen before torch loads OpenMP).

torch's CPU kernels run on OpenMP threads that spin while they wait for a peer. On an idle machine
that is the fastest way to wait; on a busy one the OS deschedules the peer and the spinning thread
burns its share waiting for it: one epoch of a ResNet-20 parent at 32x32 took 39 s with two other
CPU-bound processes running, against 5.2 s idle, and 9.5-11 s busy when waiting threads sleep
(OMP_WAIT_POLICY=PASSIVE). Sleeping has its own price on an idle machine: waking a thread costs tens
of microseconds on a virtual machine, and idle phases took 12-38% longer (medians, 2-core VM,
results/bench_load.md).
The wait policy does not change any result (the threads and their work are the same), so it is
chosen by the load at start-up; the thread count, which would change float rounding, never is.
"""
from __future__ import annotations

import os
import time
from typing import MutableMapping

OTHERS_BUSY_CORES = 0.5  # other processes using at least this much CPU make waiting threads sleep
SAMPLE_S = 0.1
chosen: str | None = None  # why evoprune set the policy, for the log (None: it did not)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def others_busy_cores(seconds: float = SAMPLE_S) -> float | None:
    """Cores' worth of CPU that other processes (and the hypervisor's steal) used over `seconds`, measured
    while this process sleeps; None where the system does not tell (not Linux)."""
    before, own_before = _cpu_jiffies(), os.times()
    if before is None:
        return None
    time.sleep(seconds)
    after, own_after = _cpu_jiffies(), os.times()
    if after is None or after[1] == before[1]:
        return None
    total_cores = os.cpu_count() or 1
    busy_share = (after[0] - before[0]) / (after[1] - before[1])  # of all CPUs
    own = (own_after.user - own_before.user + own_after.system - own_before.system) / seconds
    return max(0.0, busy_share * total_cores - own)


def choose_wait_policy(env: MutableMapping[str, str]) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE in `env` when other processes keep the CPUs busy, unless the user
    chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT) already. Returns the policy now in force
    ('PASSIVE', or None for OpenMP's default spin-then-sleep)."""
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return env.get("OMP_WAIT_POLICY")
    global chosen
    busy = others_busy_cores()
    if busy is not None and busy >= OTHERS_BUSY_CORES:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        chosen = (f"busy machine (other processes used {busy:.1f} of {os.cpu_count()} cores at start-up): "
                  f"idle OpenMP threads sleep instead of spinning")
        return "PASSIVE"
    return None
