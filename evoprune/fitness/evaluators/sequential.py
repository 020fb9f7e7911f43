"""Sequential evaluator: materialise each genome structurally, KD fine-tune it, score it."""
from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch
from torch import nn

from evoprune.fitness.precision import Scaler, autocast, channels_last_on
from evoprune.config import FitnessConfig
from evoprune.fitness.losses import FEATURE_KD_LOSSES, KDLoss, default_feature_layers, teacher_feature_targets
from evoprune.genome import Genome
from evoprune.objectives import Objectives
from evoprune.pruning.materialise import materialise
from evoprune.fitness.evaluators.forked import CRASH_SIGNALS, ForkedPool, WorkerDied, await_native_exit, fork_available, sole_evaluation

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness


def make_optimizer(params: Iterable[torch.Tensor], cfg: FitnessConfig) -> torch.optim.Optimizer:
    """The fine-tune optimiser; all are elementwise, so the batched (stacked) form is exact too.

    The fused kernels update every parameter in one call: 34 instead of 156 us per SGD step for the
    digits CNN on one CPU thread, a real share of a 4 ms step. Where this torch lacks them, the default.
    """
    params = list(params)
    if cfg.optimizer == "sgd":
        kind, kwargs = torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        kind, kwargs = torch.optim.Adam, dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        kind, kwargs = torch.optim.AdamW, dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.precision == "fp16":  # with a GradScaler, a skipped fused SGD step leaves momentum uninitialised
        return kind(params, **kwargs)
    try:
        return kind(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype here
        return kind(params, **kwargs)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, fitness: "Fitness", batches: int,
                   forward: Callable[[torch.Tensor], object] | None = None) -> None:
    """Adaptive BN (EagleEye): replace BN running statistics by their average over `batches` train
    batches. Momentum 1/k at batch k gives the exact cumulative mean in both evaluators."""
    layers = bn_layers(model)
    if not layers or batches == 0:
        return
    saved = [m.momentum for m in layers]
    model.train()
    for k in range(batches):
        for m in layers:
            m.momentum = 1.0 / (k + 1)  # k = 0 overwrites the stale statistics
        x, _, _ = fitness.batch(k)
        (forward or model)(x)
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
    model.eval()


_TARGETS: "weakref.WeakKeyDictionary[Fitness, dict]" = weakref.WeakKeyDictionary()
_TARGETS_LOCK = threading.Lock()


def feature_setup(fitness: "Fitness") -> tuple[list[str], list[int], list[torch.Tensor]]:
    """For `feature` / `attention`: the layers, the teacher's channels there, and the teacher's targets
    on the whole fine-tune subset (raw maps for `feature`, attention maps for `attention`).

    Computed once per Fitness and kept (weakly keyed by it) for every individual: memory is
    finetune_samples x the feature maps' size (attention maps are C times smaller). Step k's targets
    are the rows `fitness.plan[k]`, exactly like the cached teacher logits.
    """
    cfg = fitness.cfg.fitness
    with _TARGETS_LOCK:  # threads of one population share the cache
        cache = _TARGETS.setdefault(fitness, {})
        key = (cfg.kd, tuple(cfg.feature_layers))
        if key not in cache:
            layers = list(cfg.feature_layers) or default_feature_layers(fitness.parent, fitness.example_input)
            targets = teacher_feature_targets(fitness.parent, layers, cfg.kd, fitness.ft_x)
            channels = [int(t.shape[1]) for t in teacher_feature_targets(fitness.parent, layers, "feature",
                                                                          fitness.ft_x[:1])]
            cache[key] = (layers, channels, targets)
        return cache[key]


def make_kd_loss(model: nn.Module, fitness: "Fitness") -> tuple[KDLoss, list[torch.Tensor] | None]:
    """The configured KD loss for `model` (adapters on its device) and the cached teacher targets."""
    cfg = fitness.cfg.fitness
    if cfg.kd not in FEATURE_KD_LOSSES:
        return KDLoss(cfg.kd, cfg.temperature, cfg.alpha, model), None
    layers, channels, targets = feature_setup(fitness)
    loss = KDLoss(cfg.kd, cfg.temperature, cfg.alpha, model, cfg.beta, layers, channels, fitness.example_input,
                  seed=fitness.cfg.seed)
    return loss, targets


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """torch on one thread while inside, on a CPU: how every CPU individual is fine-tuned and scored
    (the thread count changes float rounding, so this is what makes a fine-tune reproducible)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def finetune_and_recalibrate(model: nn.Module, fitness: "Fitness", steps: int | None = None) -> tuple[float, bool]:
    """The sequential fitness recipe: KD fine-tune, then (when configured) adaptive BN."""
    with torch.enable_grad():  # callers may hold no_grad (e.g. `Run.subnet` inside an evaluation)
        kd_loss, finite = kd_finetune(model, fitness, steps)
    if finite:
        recalibrate_bn(model, fitness, fitness.cfg.fitness.adaptive_bn)
    return kd_loss, finite


def kd_finetune(model: nn.Module, fitness: "Fitness", steps: int | None = None) -> tuple[float, bool]:
    """Short KD fine-tune (`fitness.kd`) on the fixed batch plan; returns (mean loss of the last steps, finite).

    For `feature` the 1x1 adapters train with the student (same optimiser) and are dropped afterwards.
    """
    cfg = fitness.cfg.fitness
    steps = cfg.steps if steps is None else steps
    if steps == 0:
        return float("nan"), True
    if channels_last_on(cfg, fitness.device):
        model.to(memory_format=torch.channels_last)
    kd, targets = make_kd_loss(model, fitness)
    params = list(model.parameters()) + list(kd.parameters())
    opt = make_optimizer(params, cfg)
    scaler = Scaler(cfg, fitness.device)
    model.train()
    # Dropout draws from torch's global generator, which parallel individuals share: it would make
    # fitness depend on scheduling. The short fitness fine-tune runs without it (the final one keeps it).
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    tail, losses = max(1, steps // 5), []
    finite = torch.ones((), dtype=torch.bool, device=fitness.device)
    try:
        for step in range(steps):
            x, y, t = fitness.batch(step)
            with autocast(cfg, fitness.device):
                out = model(x)
            rows = None if targets is None else [tgt[fitness.plan[step]] for tgt in targets]
            loss = kd(out.float(), t, y, rows)
            # A tensor flag, not an `if`: no host synchronisation inside the step loop. A diverged
            # individual is scored worst at the end rather than poisoning the run.
            finite &= torch.isfinite(loss)
            opt.zero_grad(set_to_none=True)
            scaler.backward(loss)
            if cfg.grad_clip:
                scaler.unscale(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            if step >= steps - tail:
                losses.append(loss.detach())
    finally:
        kd.close()
    model.eval()
    if not bool(finite):
        return float("nan"), False
    return float(torch.stack(losses).mean()), True


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
    """

    kind = "sequential"

    def __init__(self, fitness: "Fitness", threads: int | None = None, pool: str | None = None):
        self.fitness = fitness
        if threads is None:
            threads = fitness.cfg.evaluator.threads
        if threads == 0:
            threads = 1 if fitness.device.type == "cuda" else default_workers()
        self.threads = threads
        pool = fitness.cfg.evaluator.pool if pool is None else pool
        if pool == "auto":
            pool = "processes" if fork_available() else "threads"
        elif pool == "processes" and not fork_available():
            raise ValueError("evaluator.pool=processes needs fork (Linux, outside daemonic processes); "
                             "use `threads` or `auto`")
        self.pool = pool
        self._workers: ForkedPool | None = None  # forked on first use, kept while its state holds
        self._state_objects: tuple = ()  # what the workers' fingerprint refers to, kept alive with them

    @property
    def workers(self) -> str:
        """How individuals run at once, for the log."""
        if self.fitness.device.type != "cpu" or self.threads <= 1:
            return "one at a time"
        return f"{self.threads} forked processes" if self.pool == "processes" else f"{self.threads} threads"

    def _one(self, genome: Genome) -> Objectives:
        start = time.perf_counter()
        model = materialise(self.fitness.parent, genome, self.fitness.example_input)
        kd_loss, finite = finetune_and_recalibrate(model, self.fitness)
        return self.fitness.score(model, kd_loss, finite, time.perf_counter() - start, scratch=True)

    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        results: list[Objectives | None] = [None] * len(genomes)

        def done(i: int, obj: Objectives) -> None:
            results[i] = obj
            if obj.status == "nonfinite":
                warnings.warn(f"fine-tune of {genomes[i].key()} produced a non-finite loss; scored as worst")
            if on_done:
                on_done(1)

        if self.fitness.device.type != "cpu":
            for i, g in enumerate(genomes):
                done(i, self._one(g))
            return results  # type: ignore[return-value]
        # On a CPU every individual runs on one torch thread, whatever `threads` is: parallel across
        # individuals instead, and bitwise the same objectives for any number of workers.
        workers = min(self.threads, len(genomes))
        # Largest first: the pool's last, lone individual is then a small one (less idle time).
        order = sorted(range(len(genomes)), key=lambda i: -sum(len(k) for k in genomes[i].values()))
        with one_thread_on_cpu(self.fitness.device), sole_evaluation() as alone:
            if workers <= 1:
                for i in order:
                    done(i, self._one(genomes[i]))
            elif not (self.pool == "processes" and alone and self._forked(genomes, order, done)):
                self._threads(genomes, order, workers, done)
        return results  # type: ignore[return-value]

    def _state(self) -> tuple[tuple, tuple]:
        """What forked workers inherit and must still hold, as (fingerprint, objects): the config; the
        parent's tensors (identity, in-place version, trainable flag and a checksum, which also
        catches writes through `.data`); the staged tensors (identity and version). The caller keeps
        the objects alive with the pool, so no id in the fingerprint is reused meanwhile."""
        f = self.fitness
        parent = [*f.parent.parameters(), *f.parent.buffers()]
        staged = [v for v in vars(f).values() if isinstance(v, torch.Tensor)]
        with torch.no_grad():
            sums = torch.stack([t.sum(dtype=torch.float64) for t in parent]).tolist() if parent else []
        fingerprint = (repr(f.cfg), id(f.parent), tuple(id(t) for t in parent + staged),
                       tuple((t._version, t.requires_grad) for t in parent), tuple(sums),
                       tuple(t._version for t in staged))
        return fingerprint, (f.parent, parent, staged)

    def _forked(self, genomes: list[Genome], order: list[int], done: Callable[[int, Objectives], None]) -> bool:
        """Evaluate in the forked workers; False (with a warning) when they cannot start here."""
        if self.fitness.cfg.fitness.kd in FEATURE_KD_LOSSES:
            feature_setup(self.fitness)  # computed once here, inherited by every child
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
            raise died_evaluating(exc, genome, self.fitness.cfg.fitness) from None
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
