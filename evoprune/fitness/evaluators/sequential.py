"""Sequential evaluator: each genome pruned structurally, KD fine-tuned, scored; in threads or forked processes."""
from __future__ import annotations

import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
from torch import nn

from evoprune.config import FitnessConfig
from evoprune.config.vocab import FEATURE_KD_LOSSES
from evoprune.fitness.evaluators.forked import (CRASH_SIGNALS, ForkedPool, WorkerDied, await_native_exit,
                                                check_pool, fork_available, sole_evaluation)
from evoprune.fitness.recipe import feature_targets, finetune_and_recalibrate, one_thread_on_cpu
from evoprune.fitness.scoring import score, score_before
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.objectives import Objectives
from evoprune.pruning.materialise import materialise


def died_evaluating(exc: WorkerDied, genome: Genome | None, cfg: FitnessConfig) -> WorkerDied:
    """The worker's death as a user reads it: what happened, to which genome, why, what to try."""
    where = ""
    if genome is not None:
        widths = list(genome.widths().items())
        shown = ", ".join(f"{name} {n}" for name, n in widths[:8]) + (", ..." if len(widths) > 8 else "")
        where = f" while fine-tuning genome {genome.key()} (channels kept: {shown})"
    if exc.signal in CRASH_SIGNALS:
        hint = (f"try another torch version (this is {torch.__version__})"
                + (" or fitness.channels_last=false" if cfg.channels_last is True else "")
                + "; evaluator.pool=threads would not help: the same crash would end the whole process")
    elif exc.signal == "SIGKILL":
        hint = ("if memory is short, lower evaluator.threads (fewer fine-tunes in memory at once), "
                "fitness.batch_size or fitness.finetune_samples")
    else:
        hint = ""
    why = "; ".join(part for part in (exc.why, hint) if part)
    return WorkerDied(exc.what, why, exc.index, exc.signal, genome, where)


def default_workers() -> int:
    """Individuals fine-tuned at once on a CPU: one per core, plus one. Individuals are coarse tasks, so
    the extra worker cost nothing measurable on a quiet 2-core machine (16 digits genomes: 5.13 s against
    5.18 s), while on a busy one (two other CPU-bound processes) it took 11.2 s against 12.35 s: the OS
    shares the cores per process, so one more worker keeps a larger share (results/bench_load.md)."""
    return _cpu_count() + 1


def _cpu_count() -> int:
    """Cores this process may use (affinity-aware where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SequentialEvaluator:
    """Each individual in its real pruned shape (exact for any architecture).

    On a CPU, small convolutions use several cores poorly, so every individual runs on one torch
    thread and `threads` individuals run at once: in forked processes on Linux (free of the GIL),
    otherwise in threads. Results are bitwise the same for any worker count and either pool, since
    every individual's arithmetic runs on one thread with the same inputs.

    `threads`, `pool`: `evaluator.threads` (0: one per core plus one on a CPU, 1 on CUDA) and
    `evaluator.pool` (`auto`: processes where fork is available).
    """

    kind = "sequential"

    def __init__(self, task: StagedTask, parent: nn.Module, threads: int = 0, pool: str = "auto"):
        self.task, self.parent = task, parent
        if threads == 0:
            threads = 1 if task.device.type == "cuda" else default_workers()
        self.threads = threads
        check_pool(pool)
        if pool == "auto":
            pool = "processes" if fork_available() else "threads"
        self.pool = pool
        self._workers: ForkedPool | None = None  # forked on first use, kept while its state holds
        self._state_objects: tuple = ()  # what the workers' fingerprint refers to, kept alive with them

    @property
    def workers(self) -> str:
        """How individuals run at once, for the log."""
        if self.task.device.type != "cpu" or self.threads <= 1:
            return "one at a time"
        return f"{self.threads} forked processes" if self.pool == "processes" else f"{self.threads} threads"

    def _one(self, genome: Genome) -> Objectives:
        start = time.perf_counter()
        model = materialise(self.parent, genome, self.task.example_input)
        before = score_before(self.task, model)
        kd_loss, finite = finetune_and_recalibrate(model, self.task, self.parent)
        return score(self.task, model, kd_loss, finite, time.perf_counter() - start, scratch=True,
                     accuracy_before=before)

    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        results: list[Objectives | None] = [None] * len(genomes)

        def done(i: int, obj: Objectives) -> None:
            results[i] = obj
            if obj.status == "nonfinite":
                warnings.warn(f"fine-tune of {genomes[i].key()} produced a non-finite loss; scored as worst")
            if on_done:
                on_done(1)

        if self.task.device.type != "cpu":
            for i, g in enumerate(genomes):
                done(i, self._one(g))
            return results  # type: ignore[return-value]
        # On a CPU every individual runs on one torch thread, whatever `threads` is: parallel across
        # individuals instead, and bitwise the same objectives for any number of workers.
        workers = min(self.threads, len(genomes))
        # Largest first: the pool's last, lone individual is then a small one (less idle time).
        order = sorted(range(len(genomes)), key=lambda i: -sum(len(k) for k in genomes[i].values()))
        with one_thread_on_cpu(self.task.device), sole_evaluation() as alone:
            if workers <= 1:
                for i in order:
                    done(i, self._one(genomes[i]))
            elif not (self.pool == "processes" and alone and self._forked(genomes, order, done)):
                self._threads(genomes, order, workers, done)
        return results  # type: ignore[return-value]

    @property
    def forked_pool(self) -> ForkedPool | None:
        """The forked workers now kept for the next evaluation, if any."""
        return self._workers

    def close(self) -> None:
        """Stop the forked workers, if any (a later evaluation forks afresh)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def _state(self) -> tuple[tuple, tuple]:
        """What forked workers inherit and must still hold, as (fingerprint, objects): the task (its
        identity, settings, and its tensors' identity and in-place version); the parent's tensors
        (identity, in-place version, trainable flag and a checksum, which also catches writes through
        `.data`). The caller keeps the objects alive with the pool, so no id in the fingerprint is
        reused meanwhile."""
        task = self.task
        parent = [*self.parent.parameters(), *self.parent.buffers()]
        staged = task.tensors()
        with torch.no_grad():
            sums = torch.stack([t.sum(dtype=torch.float64) for t in parent]).tolist() if parent else []
        fingerprint = (id(task), repr(task.cfg), task.size_metric, task.seed, id(self.parent),
                       tuple(id(t) for t in parent + staged), tuple((t._version, t.requires_grad) for t in parent),
                       tuple(sums), tuple(t._version for t in staged))
        return fingerprint, (task, self.parent, parent, staged)

    def _forked(self, genomes: list[Genome], order: list[int], done: Callable[[int, Objectives], None]) -> bool:
        """Evaluate in the forked workers; False (with a warning) when they cannot start here."""
        if self.task.cfg.kd in FEATURE_KD_LOSSES:
            feature_targets(self.task, self.parent)  # computed once here, inherited by every child
        state, self._state_objects = self._state()
        if self._workers is None or not self._workers.matches(self.threads, state):
            if self._workers is not None:
                self._workers.close()
            try:
                self._workers = ForkedPool(self._one, self.threads, state)
            except WorkerDied as exc:
                warnings.warn(f"forked workers: {exc}; evaluating in threads from now on")
                self._workers, self.pool = None, "threads"
                return False
        try:
            self._workers.map(genomes, order, done)
        except WorkerDied as exc:
            genome = genomes[exc.index] if exc.index is not None else None
            raise died_evaluating(exc, genome, self.task.cfg) from None
        return True

    def _threads(self, genomes: list[Genome], order: list[int], workers: int,
                 done: Callable[[int, Objectives], None]) -> None:
        native_ids: set[int] = set()

        def one(i: int) -> Objectives:
            native_ids.add(threading.get_native_id())
            return self._one(genomes[i])

        with ThreadPoolExecutor(workers) as pool:
            for i, obj in zip(order, pool.map(one, order)):
                done(i, obj)
        if fork_available():  # a later fork must not catch these threads mid-exit
            await_native_exit(native_ids)
