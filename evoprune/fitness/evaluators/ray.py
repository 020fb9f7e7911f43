"""Ray evaluator: a population's fine-tunes spread over Ray actors, on one machine or a cluster.

The parent (state_dict plus the parent config that builds it), the StagedTask (fine-tune data, the
teacher's outputs, the validation split, the parent's sizes) and the SearchSpace go into Ray's object
store once; each actor moves the task to its own device and evaluates chunks of genomes with the local
evaluator that `choose.py` picks there. Genomes and objectives travel as plain data (their JSON forms).
Every individual runs with one torch thread, as in the local sequential evaluator, so objectives do not
depend on which worker ran them. A worker that dies mid-chunk has its chunk re-queued (at most `RETRIES`
times), a fresh actor replaces it (at most `MAX_RESTARTS` per worker), and results are keyed by genome
key, so nothing is lost or counted twice.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
import warnings
from collections import deque
from typing import Any, Callable

import torch
from torch import nn

from evoprune.config import Config, ConfigError, EvaluatorConfig, ParentConfig
from evoprune.config.rules import check_ray_share
from evoprune.fitness.precision import check_channels_last, resolve_device
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.objectives import Objectives
from evoprune.pruning.space import SearchSpace

RETRIES = 3  # times one chunk is re-queued after its worker died, before the evaluation fails
MAX_RESTARTS = 3  # fresh actors per worker slot that may replace dead ones (built from the object store)
READY_TIMEOUT_S = 600.0  # for the first worker to come up (cluster scheduling, imports, parent rebuild)
CRASH_ENV = "EVOPRUNE_RAY_CRASH_ONCE"  # test hook: a marker path; the first worker to see it missing dies


def import_ray():
    """The `ray` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("evaluator.backend", "'ray' needs Ray installed: pip install 'evoprune[ray]'") from None
    return ray


def parent_payload(parent: nn.Module, input_shape: tuple[int, ...], n_classes: int,
                   parent_config: ParentConfig | None) -> dict[str, Any]:
    """The parent as a state_dict plus the parent config that builds it; the module itself when no config
    is given or it does not build this very architecture (e.g. a user's own parent handed to Fitness).
    The config travels with `pretrained: none`: the weights come from the state_dict, never a download."""
    from evoprune.parent.train import build_parent

    state = {k: v.detach().cpu() for k, v in parent.state_dict().items()}
    shape = tuple(input_shape)
    if parent_config is not None:
        cfg = Config(parent=dataclasses.replace(parent_config, pretrained="none"))
        try:
            with torch.device("meta"):  # shapes only: no memory, no draw from the global RNG
                ref = build_parent(cfg.parent, shape, n_classes).state_dict()
            if list(ref) == list(state) and all(ref[k].shape == state[k].shape for k in ref):
                return {"state_dict": state, "input_shape": shape, "n_classes": n_classes, "config": cfg}
        except Exception:  # noqa: BLE001 - anything the config cannot build is shipped whole
            pass
    return {"module": copy.deepcopy(parent).cpu()}


def parent_from_payload(payload: dict[str, Any]) -> nn.Module:
    """The parent `parent_payload` shipped (eval mode, on the CPU)."""
    if "module" in payload:
        return payload["module"]
    from evoprune.parent.train import build_parent

    with torch.random.fork_rng(devices=[]):
        model = build_parent(payload["config"].parent, payload["input_shape"], payload["n_classes"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()


class Worker:
    """One Ray actor: the shipped task on this worker's device and the local evaluator chosen for it."""

    def __init__(self, payload: dict[str, Any], crash_once: str | None = None):
        from evoprune.fitness.evaluators.choose import choose_evaluator

        torch.set_num_threads(1)
        task: StagedTask = payload["task"]
        self.device = resolve_device(task.cfg.device)
        check_channels_last(task.cfg, self.device)
        task = task.to(self.device)
        parent = parent_from_payload(payload["parent"]).to(self.device).eval()
        space = SearchSpace.from_json(payload["space"])
        self.evaluator, self.evaluator_info = choose_evaluator(task, parent, space, payload["evaluator"])
        self.crash_once = crash_once

    def info(self) -> dict[str, Any]:
        return {**self.evaluator_info, "kind": self.evaluator.kind,
                "device": str(self.device), "host": socket.gethostname(), "pid": os.getpid()}

    def evaluate(self, genomes: list[dict[str, list[int]]]) -> dict[str, Any]:
        """Objectives (JSON form) by genome key, and the local evaluator's kind."""
        batch = [Genome.from_json(g) for g in genomes]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread per individual, as the local sequential evaluator
        try:
            objs = self.evaluator.evaluate(batch)
        finally:
            torch.set_num_threads(threads)
        if self.crash_once and not os.path.exists(self.crash_once):
            open(self.crash_once, "w").close()
            os._exit(1)  # test hook: die mid-chunk, after the work and before the results are returned
        return {"kind": self.evaluator.kind,
                "results": [(g.key(), o.to_json()) for g, o in zip(batch, objs)]}


class _Chunk:
    __slots__ = ("keys", "attempts")

    def __init__(self, keys: list[str]):
        self.keys, self.attempts = keys, 0


class RayEvaluator:
    """Same interface as the local evaluators (`kind`, `evaluate(genomes, on_done)`, `close`); `kind` is
    the local evaluator the workers run, so a checkpoint records (and a resume pins) the same thing.

    `settings`: the `evaluator` config section (address, workers, gpus_per_worker, chunk; the workers
    choose their local evaluator by its `kind`); `parent_config`: how the parent is built (see
    `parent_payload`). The GPU share is checked against the device first (config.rules.check_ray_share).
    """

    backend = "ray"

    def __init__(self, task: StagedTask, parent: nn.Module, space: SearchSpace, settings: EvaluatorConfig,
                 parent_config: ParentConfig | None = None):
        check_ray_share(settings, task.cfg.device)
        self.ray = ray = import_ray()
        ecfg = self.settings = settings
        gpus = ecfg.gpus_per_worker
        device = task.cfg.device
        self._owns_ray = not ray.is_initialized()  # else: the caller's Ray (and evaluator.address is unused)
        if self._owns_ray:
            try:
                ray.init(address=ecfg.address, include_dashboard=False, logging_level="warning")
            except Exception as exc:  # noqa: BLE001 - no cluster there, a bad address, a version mismatch...
                where = f"the Ray cluster at {ecfg.address!r}" if ecfg.address else "a local Ray instance"
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ConfigError("evaluator.address", f"cannot start or join {where} "
                                                       f"({type(exc).__name__}: {detail[:200]})") from None
        cluster = ray.cluster_resources()
        fits = int(cluster.get("GPU", 0) / gpus) if gpus else int(cluster.get("CPU", 0))
        n = ecfg.workers or fits
        if n < 1:
            self.close()
            raise ConfigError("evaluator.workers", f"the Ray cluster has {cluster.get('GPU', 0):g} GPUs, not one "
                                                   f"worker's share of {gpus:g}")
        if n > fits:
            warnings.warn(f"{n} Ray workers asked for, {fits} fit the cluster now ({cluster.get('CPU', 0):g} CPUs, "
                          f"{cluster.get('GPU', 0):g} GPUs); the others start when resources appear")
        worker_device = device if device != "auto" else ("cuda" if gpus else "cpu")
        worker_task = task.cpu().with_cfg(dataclasses.replace(task.cfg, device=worker_device))
        payload = {"task": worker_task, "space": space.to_json(),
                   "evaluator": dataclasses.replace(ecfg, backend="local", threads=1),
                   "parent": parent_payload(parent, tuple(task.example_input.shape[1:]), task.n_classes,
                                            parent_config)}
        self._payload = ray.put(payload)  # once; every actor (and every restart) reads it from the store
        self._crash_once = os.environ.get(CRASH_ENV)
        # Restarts are ours (a fresh actor per dead one, see _retire) rather than Ray's max_restarts: a
        # chunk in flight on a dead actor is re-queued here either way, and one rule is simpler to follow.
        self._remote = ray.remote(Worker).options(num_cpus=1, num_gpus=gpus, max_restarts=0, max_task_retries=0)
        self.n_workers, self.replacements = n, n * MAX_RESTARTS
        self.actors: list[Any] = []
        self.ready: list[Any] = []  # actors that reported in (and run the agreed local evaluator)
        self._starting: dict[Any, Any] = {}  # info ref -> actor
        self.failures, self.restarts = 0, 0
        for _ in range(n):
            self._start_actor()
        first, _ = ray.wait(list(self._starting), num_returns=1, timeout=READY_TIMEOUT_S)
        if not first:
            self.close()
            raise RuntimeError(f"no Ray worker started within {READY_TIMEOUT_S:.0f}s (resources: {cluster})")
        try:
            worker_info = ray.get(first[0])
        except ray.exceptions.RayError as exc:  # the worker's own error (e.g. the parent does not load)
            self.close()
            raise RuntimeError(f"the first Ray worker failed to start: {exc}") from None
        self.kind = worker_info["kind"]
        self.ready.append(self._starting.pop(first[0]))
        self._poll_starting(0)
        self.info = {"kind": self.kind, "backend": "ray", "workers": n, "gpus_per_worker": gpus,
                     "reason": f"ray: {n} workers, {worker_info['reason']}",
                     "worker": {k: v for k, v in worker_info.items() if k not in ("pid",)},
                     "cluster": {k: cluster[k] for k in ("CPU", "GPU") if k in cluster}}

    # -- actors -------------------------------------------------------------------------------
    def _start_actor(self) -> None:
        actor = self._remote.remote(self._payload, self._crash_once)
        self.actors.append(actor)
        self._starting[actor.info.remote()] = actor

    def wait_for_workers(self, poll_s: float = 1.0) -> None:
        """Return once every actor has reported in (or been dropped): e.g. before timing an evaluation."""
        while self._starting:
            self._poll_starting(poll_s)

    def _poll_starting(self, timeout: float) -> None:
        """Move actors that have reported in to `ready` (one with another local evaluator is dropped)."""
        if not self._starting:
            return
        done, _ = self.ray.wait(list(self._starting), num_returns=len(self._starting), timeout=timeout)
        for ref in done:
            self._on_started(ref)

    def _on_started(self, ref: Any) -> None:
        actor = self._starting.pop(ref)
        try:
            kind = self.ray.get(ref)["kind"]
        except self.ray.exceptions.RayActorError:
            self._retire(actor)
            return
        if kind != self.kind:
            warnings.warn(f"a Ray worker chose the {kind} evaluator, not {self.kind}; it is not used")
            self._retire(actor, replace=False)
        else:
            self.ready.append(actor)

    def _retire(self, actor: Any, replace: bool = True) -> None:
        if actor in self.ready:
            self.ready.remove(actor)
        self.ray.kill(actor, no_restart=True)
        if replace and self.replacements > 0:
            self.replacements -= 1
            self.restarts += 1
            self._start_actor()

    # -- evaluation ---------------------------------------------------------------------------
    def _chunks(self, keys: list[str]) -> list[_Chunk]:
        """One genome per call for the sequential evaluator (balance); a worker's share for batched."""
        size = 1
        if self.kind == "batched":
            size = self.settings.chunk or math.ceil(len(keys) / max(1, len(self.ready)))
        return [_Chunk(keys[i:i + size]) for i in range(0, len(keys), size)]

    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        ray = self.ray
        by_key = {g.key(): g.to_json() for g in genomes}
        queue = deque(self._chunks(list(by_key)))
        results: dict[str, Objectives] = {}
        running: dict[Any, tuple[Any, _Chunk]] = {}  # result ref -> (actor, chunk); one chunk per actor
        self._poll_starting(0)
        while queue or running:
            busy = {id(a) for a, _ in running.values()}
            for actor in [a for a in self.ready if id(a) not in busy]:
                if not queue:
                    break
                chunk = queue.popleft()
                running[actor.evaluate.remote([by_key[k] for k in chunk.keys])] = (actor, chunk)
            if not running and not self._starting:
                raise RuntimeError("no Ray worker is left to evaluate on")
            done, _ = ray.wait(list(running) + list(self._starting), num_returns=1)
            ref = done[0]
            if ref in self._starting:
                self._on_started(ref)
                continue
            actor, chunk = running.pop(ref)
            try:
                out = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # a real error in the evaluation: not retried
                raise exc.as_instanceof_cause() from None
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as exc:
                self._requeue(queue, chunk, exc)
                self._retire(actor)  # no Ray restarts: a worker that failed a call is gone; replace it
                continue
            if out["kind"] != self.kind:  # a restarted worker that chose differently: its results differ
                self._retire(actor, replace=False)
                self._requeue(queue, chunk, RuntimeError(f"worker switched to {out['kind']}"))
                continue
            new = 0
            for key, obj in out["results"]:
                if key not in results:  # keyed by genome: a chunk that ran twice counts once
                    results[key] = Objectives.from_json(obj)
                    new += 1
            if on_done and new:
                on_done(new)
        return [results[g.key()] for g in genomes]

    def _requeue(self, queue: deque, chunk: _Chunk, exc: Exception) -> None:
        self.failures += 1
        chunk.attempts += 1
        if chunk.attempts > RETRIES:
            raise RuntimeError(f"genomes {', '.join(chunk.keys)} lost their Ray worker {chunk.attempts} times; "
                               f"last: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        queue.appendleft(chunk)

    def close(self) -> None:
        """Stop the workers (and the Ray instance, if this evaluator started it)."""
        for actor in getattr(self, "actors", []):  # also from a constructor that failed half-way
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors, self.ready, self._starting = [], [], {}
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
