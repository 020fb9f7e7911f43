"""Forked CPU workers: they never outlive their parent, and Ctrl-C stops them at once."""
from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from evoprune.fitness.evaluators import SequentialEvaluator, forked
from evoprune.fitness.evaluators.forked import ForkedPool, WorkerDied, fork_available
from evoprune.evolve.population import initial_population

pytestmark = pytest.mark.skipif(not fork_available(), reason="forked workers need Linux")

# A parent whose two children each record their pid, then work "forever".
_PARENT = textwrap.dedent("""
    import faulthandler, os, signal, sys, time
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view into a hang
    # Ctrl-C as a terminal delivers it: a test run started in the background (`pytest &`) hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from evoprune.fitness.evaluators.forked import ForkedPool

    def work(i):
        open(os.path.join(sys.argv[1], f"child{i}"), "w").write(str(os.getpid()))
        time.sleep(120)

    ForkedPool(work, 2, None).map([0, 1], [0, 1], lambda i, value: None)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has stopped; only its exit status waits to be collected


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("child*"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the children never started"
        time.sleep(0.05)
    time.sleep(0.1)  # both pid files are complete
    return proc, [int(p.read_text()) for p in sorted(tmp_path.glob("child*"))]


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_workers_stop_with_their_parent(tmp_path, sig):
    proc, children = _start_parent(tmp_path)
    assert all(_alive(p) for p in children) and proc.pid not in children
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # show where every thread of the parent is stuck
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        for p in children:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        pytest.fail("the parent did not exit after the signal; its threads:\n" + proc.stderr.read().decode())
    if sig == signal.SIGINT:  # Ctrl-C: the parent raises KeyboardInterrupt, having stopped the children
        assert b"KeyboardInterrupt" in proc.stderr.read()
    left = _wait_gone(children)
    for p in left:  # do not leak them into the rest of the session, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left


def test_results_arrive_with_their_index_and_the_pool_is_reused():
    pool = ForkedPool(lambda x: (x * x, os.getpid()), 2, "state")
    seen: dict[int, tuple] = {}
    pool.map([5, 6, 7, 8], [3, 0, 2, 1], seen.__setitem__)
    assert {i: v[0] for i, v in seen.items()} == {0: 25, 1: 36, 2: 49, 3: 64}
    pids = {v[1] for v in seen.values()}
    assert os.getpid() not in pids  # the work ran in children
    pool.map([9, 10], [0, 1], seen.__setitem__)
    assert {seen[0][1], seen[1][1]} <= set(pool.pids)  # the same children, not new ones
    assert pool.matches(2, "state") and not pool.matches(2, "changed") and not pool.matches(3, "state")
    pool.close()
    assert not pool.matches(2, "state")


def _die_on_2(x):  # module level: run by reference in the children
    if x == 2:
        os.kill(os.getpid(), int(os.environ["EVOPRUNE_TEST_SIGNAL"]))
    return x


@pytest.mark.parametrize("sig, says", [
    (signal.SIGSEGV, "crashed with SIGSEGV: inside native code .* not a lack of memory"),
    (signal.SIGABRT, "crashed with SIGABRT"),
    (signal.SIGKILL, "killed with SIGKILL: from outside"),
])
def test_a_dead_worker_is_reported_with_its_signal_and_item(sig, says, monkeypatch):
    monkeypatch.setenv("EVOPRUNE_TEST_SIGNAL", str(int(sig)))
    pool = ForkedPool(_die_on_2, 2, None)
    with pytest.raises(WorkerDied, match=says) as info:
        pool.map([0, 1, 2, 3], [0, 1, 2, 3], lambda i, value: None)
    assert info.value.index == 2 and info.value.signal == sig.name
    assert "out of memory" not in str(info.value)  # no evidence of it
    assert not pool.matches(2, None)  # closed: the next call forks a fresh pool


def test_a_kill_by_the_out_of_memory_killer_says_so(monkeypatch):
    kills = iter([0, 1])  # the cgroup's oom_kill count when the pool starts, then after the death
    monkeypatch.setattr(forked, "oom_kills", lambda: next(kills))
    monkeypatch.setenv("EVOPRUNE_TEST_SIGNAL", str(int(signal.SIGKILL)))
    pool = ForkedPool(_die_on_2, 2, None)
    with pytest.raises(WorkerDied, match="kernel's out-of-memory killer"):
        pool.map([2], [0], lambda i, value: None)


def test_the_kernels_oom_kill_count_is_read_where_the_system_has_one():
    count = forked.oom_kills()
    assert count is None or count >= 0


def test_a_garbage_collected_pool_leaves_no_children():
    pool = ForkedPool(lambda x: x, 2, None)
    pool.map([1, 2], [0, 1], lambda i, value: None)
    children = pool.pids
    del pool
    gc.collect()
    assert not _wait_gone(children)


def test_workers_forked_by_a_finished_thread_are_not_reused():
    box = {}
    maker = threading.Thread(target=lambda: box.setdefault("pool", ForkedPool(abs, 2, "s")))
    maker.start()
    maker.join()
    pool = box["pool"]
    assert not _wait_gone(pool.pids)  # they die with the thread that forked them
    assert not pool.matches(2, "s")  # so the evaluator forks afresh instead of calling dead workers
    pool.close()


def _hang(key):  # a child that never becomes ready (module level: submitted by reference)
    time.sleep(30)


def test_workers_that_do_not_start_fall_back_to_threads(tiny_fitness, monkeypatch):

    genomes = [g for g, _ in initial_population(tiny_fitness.space, tiny_fitness.cfg.population, 3, random.Random(5))]
    expected = SequentialEvaluator(tiny_fitness.task, tiny_fitness.parent, threads=1).evaluate(genomes)
    monkeypatch.setattr(forked, "child_ready", _hang)
    monkeypatch.setattr(forked, "READY_TIMEOUT_S", 0.5)
    evaluator = SequentialEvaluator(tiny_fitness.task, tiny_fitness.parent, threads=2, pool="processes")
    with pytest.warns(UserWarning, match="did not start within.*threads from now on"):
        got = evaluator.evaluate(genomes)
    assert evaluator.pool == "threads"
    assert [(o.accuracy, o.kd_loss) for o in got] == [(o.accuracy, o.kd_loss) for o in expected]


def test_a_changed_parent_is_seen_by_fresh_workers(tiny_fitness):

    genomes = [g for g, _ in initial_population(tiny_fitness.space, tiny_fitness.cfg.population, 3, random.Random(6))]
    evaluator = SequentialEvaluator(tiny_fitness.task, tiny_fitness.parent, threads=2, pool="processes")
    evaluator.evaluate(genomes)
    first = evaluator.forked_pool
    saved = {k: v.clone() for k, v in tiny_fitness.parent.state_dict().items()}
    try:
        with torch.no_grad():
            for p in tiny_fitness.parent.parameters():
                p.data.mul_(0.5)  # through .data: the version counter does not see it, the checksum does
        got = evaluator.evaluate(genomes)
        assert evaluator.forked_pool is not first
        expected = SequentialEvaluator(tiny_fitness.task, tiny_fitness.parent, threads=1).evaluate(genomes)
        assert [(o.accuracy, o.kd_loss) for o in got] == [(o.accuracy, o.kd_loss) for o in expected]
    finally:
        tiny_fitness.parent.load_state_dict(saved)
