"""Choosing an evaluator: a measured rule, and a proof that the batched form is exact on the actual parent."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch

from evoprune.config.streams import stream_seed

from evoprune.fitness.losses import FEATURE_KD_LOSSES, LOGIT_KD_LOSSES
from evoprune.metrics import logits_of
from evoprune.pruning.draw import pruned_genome
from evoprune.pruning.materialise import materialise
from evoprune.fitness.evaluators.batched import BatchedEvaluator, Unsupported
from evoprune.fitness.evaluators.sequential import SequentialEvaluator, finetune_and_recalibrate

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness

FORWARD_TOL = 1e-3  # max |masked - pruned| logit difference, relative to max(1, |logits|)
FINETUNE_TOL = 2e-2  # the same after a few fine-tune steps (rounding differences grow a little)
PROBE_GENOMES = 4
PROBE_STEPS = 3


def probe_genomes(fitness: "Fitness", n: int = PROBE_GENOMES) -> list:
    """A fixed spread of subnets (mild to heavy pruning) for the proof."""
    rng = random.Random(stream_seed(fitness.cfg.seed, "evaluator.probe"))
    crits = fitness.space.criteria
    return [pruned_genome(fitness.space, crits[i % len(crits)], 0.2 + 0.6 * i / max(1, n - 1), 0.1, rng)
            for i in range(n)]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, float]:
    diff = float((a - b).abs().max())
    return diff <= tol * max(1.0, float(b.abs().max())), diff


def verify(batched: BatchedEvaluator, fitness: "Fitness") -> dict[str, Any]:
    """Raise Unsupported unless masked == pruned, before and after a short fine-tune.

    Exactness is a structural property, so it is checked in fp32 whatever `fitness.precision` is
    (bf16 rounding alone would exceed the tolerances).
    """
    precision = fitness.cfg.fitness.precision
    fitness.cfg.fitness.precision = "fp32"
    try:
        return _verify(batched, fitness)
    finally:
        fitness.cfg.fitness.precision = precision


def _verify(batched: BatchedEvaluator, fitness: "Fitness") -> dict[str, Any]:
    genomes = probe_genomes(fitness)
    x = fitness.val_x[:128]
    params, buffers = batched._stack(len(genomes))
    masked = batched.logits(params, buffers, batched.masks(genomes), x)
    steps = min(fitness.cfg.fitness.steps, PROBE_STEPS)
    params, buffers, masks, _, _ = batched.finetune(genomes, steps=steps)
    tuned = batched.logits(params, buffers, masks, x)
    worst = {"forward": 0.0, "finetune": 0.0}
    for i, g in enumerate(genomes):
        model = materialise(fitness.parent, g, fitness.example_input)
        ok, diff = _close(masked[i].cpu(), logits_of(model, x), FORWARD_TOL)
        worst["forward"] = max(worst["forward"], diff)
        if not ok:
            raise Unsupported(f"masked forward differs from the pruned network by {diff:.3g}")
        finetune_and_recalibrate(model, fitness, steps=steps)
        out = logits_of(model, x)
        ok, diff = _close(tuned[i].cpu(), out, FINETUNE_TOL)
        worst["finetune"] = max(worst["finetune"], diff)
        if not ok:
            raise Unsupported(f"after {steps} fine-tune steps, masked differs from pruned by {diff:.3g}")
    return {"max_logit_diff": worst, "probe_steps": steps, "probe_genomes": len(genomes)}


def prefers_batched(device: torch.device) -> bool:
    """The measured rule (results/bench_fitness.md): on a CPU the sequential evaluator, with one
    individual per core, beat the masked batched form for both the digits CNN and ResNet-20 at every
    population size measured (batching pays full-width FLOPs on a compute-bound device); batching is
    for GPUs, where per-step launch overhead dominates.

    A fixed rule rather than a timing at start-up, so that the same config always picks the same
    evaluator (the two agree only within float rounding, and fronts must be reproducible).
    """
    return device.type == "cuda"


def choose_evaluator(fitness: "Fitness") -> tuple[Any, dict[str, Any]]:
    """The evaluator that `evaluator.kind` asks for, with the evidence for the choice."""
    if fitness.cfg.evaluator.backend == "ray":  # workers apply this same rule on their own devices
        from evoprune.fitness.evaluators.ray import RayEvaluator  # Ray is optional: imported only when asked for

        ray_evaluator = RayEvaluator(fitness)
        return ray_evaluator, ray_evaluator.info
    kind = fitness.cfg.evaluator.kind
    if kind == "sequential":
        return SequentialEvaluator(fitness), {"kind": "sequential", "reason": "configured"}
    if fitness.cfg.fitness.kd in FEATURE_KD_LOSSES:
        reason = (f"{'auto' if kind == 'auto' else 'configured batched'}: fitness.kd={fitness.cfg.fitness.kd} needs "
                  f"the subnets' feature maps; the batched evaluator supports only logit losses "
                  f"({', '.join(LOGIT_KD_LOSSES)})")
        return SequentialEvaluator(fitness), {"kind": "sequential", "reason": reason}
    if kind == "auto" and not prefers_batched(fitness.device):
        reason = "auto: sequential on a CPU (measured faster there; batched is for CUDA)"
        return SequentialEvaluator(fitness), {"kind": "sequential", "reason": reason}
    try:
        batched = BatchedEvaluator(fitness, fitness.cfg.evaluator.chunk)
        evidence = verify(batched, fitness)
    except Unsupported as exc:
        info = {"kind": "sequential", "reason": f"batched form not exact for this parent: {exc}"}
        return SequentialEvaluator(fitness), info
    reason = "configured; proof passed" if kind == "batched" else \
        f"auto: proof passed; batched on {fitness.device.type}"
    return batched, {"kind": "batched", "reason": reason, **evidence}
