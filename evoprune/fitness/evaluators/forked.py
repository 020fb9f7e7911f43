"""Forked worker processes for CPU fitness: one individual per core, free of the GIL.

Threads share one interpreter lock, and a short fine-tune of a small network spends a share of each
step in Python (autograd, optimiser, module calls): on two cores, two processes evaluated 1.12-1.14x
as many individuals per second as two threads (results/bench_cpu_options.md). Forked children share
the parent network, the staged tensors and the teacher outputs copy-on-write: only genomes and
objectives cross the pipes. The pool is forked once and reused while the state it inherited is
unchanged (forking per call costs tens of milliseconds and re-copies the pages the children touch).
"""
from __future__ import annotations

import ctypes
import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

import torch

from evoprune.config import ConfigError
from evoprune.errors import RunFailed, signal_name

# Work for the children, keyed per pool; set only while its children are forked (they inherit it).
_WORK: dict[int, Callable[[Any], Any]] = {}
_BARRIERS: dict[int, Any] = {}  # the start-up meeting point of each pool's children, inherited likewise
# Per pool, shared with its children: (slots taken, pid per slot, item index each slot is running or -1).
# A child takes a slot at start-up; when one dies, its slot names the item it died on.
_TRACKS: dict[int, tuple[Any, Any, Any]] = {}
_SLOT = -1  # in a child: its slot
READY_TIMEOUT_S = 60.0  # for every child to start and run a first convolution
_KEYS = itertools.count()
_LOCK = threading.Lock()
_RUNNING = 0  # evaluations in progress in this process (guarded by _LOCK)


def fork_available() -> bool:
    """Fork is safe for CPU torch on Linux; elsewhere (macOS frameworks, Windows) and inside daemonic
    processes, which may not have children, callers use threads instead."""
    return sys.platform.startswith("linux") and not mp.current_process().daemon


def check_pool(pool: str) -> None:
    """`evaluator.pool`: `processes` needs fork here (ConfigError naming the key otherwise)."""
    if pool == "processes" and not fork_available():
        raise ConfigError("evaluator.pool", "'processes' needs fork (Linux, outside daemonic processes); "
                                            "use threads or auto")


@contextmanager
def sole_evaluation() -> Iterator[bool]:
    """Yields whether no other thread of this process is evaluating at the same time.

    Forking while another thread is inside torch can copy a lock it holds (MKL's allocator) into the
    child, which then hangs; so a caller that is not alone (e.g. a study running trials in threads)
    uses threads instead of processes.
    """
    global _RUNNING
    with _LOCK:
        _RUNNING += 1
        alone = _RUNNING == 1
    try:
        yield alone
    finally:
        with _LOCK:
            _RUNNING -= 1


def await_native_exit(native_ids: Iterable[int], timeout: float = 2.0) -> None:
    """Wait until threads that Python has joined have also left the OS.

    A joined thread still runs its native thread-local destructors, and MKL frees its buffers there
    under a lock: a fork in that window copies the lock held and the child hangs on it (reproduced in
    43 of 300 forks right after joining two torch threads, none of 600 after this wait).
    """
    deadline = time.monotonic() + timeout
    pending = [t for t in native_ids if t != threading.get_native_id()]
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if os.path.exists(f"/proc/self/task/{t}")]
        if pending:
            time.sleep(0.0005)


def _child_init(parent_pid: int) -> None:
    # Ctrl-C and `timeout`'s SIGTERM reach the whole process group: the parent handles them and stops
    # the children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Die with the parent, even when it is SIGKILLed (its children would otherwise wait forever).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    torch.set_num_threads(1)  # one core each: the children are the parallelism


def _child_run(key: int, index: int, item: Any) -> Any:
    running = _TRACKS[key][2]
    running[_SLOT] = index
    try:
        return _WORK[key](item)
    finally:
        running[_SLOT] = -1


def child_ready(key: int) -> int:
    """Run a small convolution forward and backward, then meet the other children.

    A fork that copied a lock held by another thread (MKL's allocator, say) hangs on the first torch
    call, so it shows here, at start-up and under a timeout, rather than silently mid-search. The
    barrier makes every child take exactly one of these tasks.
    """
    global _SLOT
    taken, pids, _ = _TRACKS[key]
    with taken.get_lock():
        _SLOT = taken.value
        taken.value += 1
    pids[_SLOT] = os.getpid()
    x = torch.ones(2, 3, 6, 6, requires_grad=True)
    torch.nn.functional.conv2d(x, torch.ones(4, 3, 3, 3)).sum().backward()
    _BARRIERS[key].wait(READY_TIMEOUT_S)
    return os.getpid()


class WorkerDied(RunFailed):
    """A worker process ended without answering: `what` happened (e.g. 'crashed with SIGSEGV') and `why`,
    as far as the evidence goes; `index`: the item it was running (None if unknown); `signal`: the signal
    that ended it (None if it exited); `genome`: set by the evaluator."""

    def __init__(self, what: str, why: str = "", index: int | None = None, signal: str | None = None,
                 genome: Any = None, where: str = ""):
        super().__init__(f"a worker process {what}{where}{': ' + why if why else ''}")
        self.what, self.why, self.index, self.signal, self.genome = what, why, index, signal, genome


CRASH_SIGNALS = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE"}


def oom_kills() -> int | None:
    """The kernel's count of out-of-memory kills in this process's memory cgroup (v2 or v1), or None
    where the system does not tell."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            where = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events"
        elif "memory" in controllers.split(","):
            where = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"
        else:
            continue
        try:
            for entry in where.read_text().splitlines():
                name, _, value = entry.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def death_cause(exitcode: int | None, oom_before: int | None, oom_after: int | None) -> tuple[str | None, str, str]:
    """(signal name or None, what happened, why as far as the evidence goes) for a child's exit code."""
    if exitcode is None or exitcode >= 0:
        return None, (f"exited with code {exitcode}" if exitcode is not None else "stopped answering"), ""
    name = signal_name(-exitcode)
    if name in CRASH_SIGNALS:
        return name, f"crashed with {name}", ("inside native code (torch or a library it uses), a bug there, "
                                               "not a lack of memory")
    if name == "SIGKILL":
        if oom_before is not None and oom_after is not None and oom_after > oom_before:
            return name, "was killed (SIGKILL)", "by the kernel's out-of-memory killer (its cgroup's oom_kill count rose)"
        return name, "was killed with SIGKILL", ("from outside: a user or another program, or an out-of-memory killer "
                                                  "that this process cannot see (no out-of-memory kill in its own cgroup)")
    return name, f"was ended by {name}", ""


def _kill(processes: list, pool: ProcessPoolExecutor) -> None:
    for proc in processes:
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class ForkedPool:
    """`workers` forked processes that run `work(item)`; results come back to this process.

    `work` and everything it reaches are the state as of the fork; `state` is what the caller
    compares to decide when that state is stale (see `matches`). Raises WorkerDied when the children
    do not all start and answer within READY_TIMEOUT_S.
    """

    def __init__(self, work: Callable[[Any], Any], workers: int, state: Hashable):
        self.workers, self.state = workers, state
        self._key = next(_KEYS)
        ctx = mp.get_context("fork")
        self._track = (ctx.Value("i", 0), ctx.Array("q", [0] * workers, lock=False),
                       ctx.Array("q", [-1] * workers, lock=False))
        self._oom_kills = oom_kills()
        with _LOCK:  # fork every child while `work` is registered, and only then let go of it
            _WORK[self._key] = work
            _BARRIERS[self._key] = ctx.Barrier(workers)
            _TRACKS[self._key] = self._track
            try:
                self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                                                 initializer=_child_init, initargs=(os.getpid(),))
                ready = [self._pool.submit(child_ready, self._key) for _ in range(workers)]
                # Private, but 3.10-3.13 have no public way to kill an executor's processes.
                self._processes = list((getattr(self._pool, "_processes", None) or {}).values())
                # Killed on garbage collection too: idle children must not outlive a dropped
                # evaluator (nor wait for the cycle collector where one sits in a reference cycle).
                self._finalizer = weakref.finalize(self, _kill, self._processes, self._pool)
                try:
                    done, _ = wait(ready, timeout=READY_TIMEOUT_S + 5)
                except BaseException:  # e.g. Ctrl-C while the children start
                    self.close()
                    raise
                if len(done) < workers or any(f.exception() for f in done):
                    self.close()
                    raise WorkerDied(f"did not start within {READY_TIMEOUT_S:.0f} s")
            finally:
                # The children hold their copies; nothing here keeps `work` (and its owner) alive.
                del _WORK[self._key], _BARRIERS[self._key], _TRACKS[self._key]

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [p.pid for p in self._processes]

    def alive(self) -> bool:
        """Every child still runs (they die with the thread that forked them, e.g. a finished thread)."""
        return self._pool is not None and all(p.is_alive() for p in self._processes)

    def matches(self, workers: int, state: Hashable) -> bool:
        return workers == self.workers and state == self.state and self.alive()

    def map(self, items: Sequence[Any], order: Sequence[int], on_result: Callable[[int, Any], None]) -> None:
        """Run `work(items[i])` for i in `order` (submitted in that order); `on_result(i, value)` runs
        here as each finishes. A child's exception is raised here; on any error the pool is closed."""
        try:
            futures = {self._pool.submit(_child_run, self._key, i, items[i]): i for i in order}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(futures[fut], fut.result())
        except BrokenProcessPool as exc:
            died = self._death()
            self.close()
            raise died from exc
        except BaseException:
            self.close()
            raise

    def _death(self) -> WorkerDied:
        """What is known of a child that died: its exit code or signal, and the item it was running."""
        _, pids, running = self._track
        deadline = time.monotonic() + 2.0  # the executor sees the death a moment before the exit status
        dead = [p for p in self._processes if p.exitcode is not None]
        while not dead and time.monotonic() < deadline:
            time.sleep(0.01)
            dead = [p for p in self._processes if p.exitcode is not None]
        if not dead:
            return WorkerDied("stopped answering")
        proc = dead[0]
        slot = next((s for s, pid in enumerate(pids) if pid == proc.pid), None)
        index = running[slot] if slot is not None and running[slot] >= 0 else None
        name, what, why = death_cause(proc.exitcode, self._oom_kills, oom_kills())
        return WorkerDied(f"(pid {proc.pid}) {what}", why, index, name)

    def close(self) -> None:
        """Stop the children now (an interrupt or a failure must not wait for running fine-tunes)."""
        if self._pool is not None:
            self._finalizer()  # _kill, once
            self._pool = None
