"""Choosing an evaluator: a measured rule, and a proof that the batched form is exact on the actual parent."""
from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch
from torch import nn

from evoprune.config import EvaluatorConfig, FitnessConfig
from evoprune.config.streams import stream_seed
from evoprune.config.vocab import FEATURE_KD_LOSSES, LOGIT_KD_LOSSES
from evoprune.fitness.evaluators.batched import BatchedEvaluator, Unsupported
from evoprune.fitness.evaluators.protocol import Evaluator
from evoprune.fitness.evaluators.sequential import SequentialEvaluator
from evoprune.fitness.recipe import finetune_and_recalibrate
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.metrics import is_multilabel, logits_of
from evoprune.pruning.draw import pruned_genome
from evoprune.pruning.materialise import materialise
from evoprune.pruning.space import SearchSpace

FORWARD_TOL = 1e-3  # max |masked - pruned| logit difference, relative to max(1, |logits|)
FINETUNE_TOL = 2e-2  # the same after a few fine-tune steps (rounding differences grow a little)
PROBE_GENOMES = 4
PROBE_STEPS = 3


def probe_genomes(space: SearchSpace, seed: int, n: int = PROBE_GENOMES) -> list:
    """A fixed spread of subnets (mild to heavy pruning) for the proof."""
    rng = random.Random(stream_seed(seed, "evaluator.probe"))
    crits = space.criteria
    return [pruned_genome(space, crits[i % len(crits)], 0.2 + 0.6 * i / max(1, n - 1), 0.1, rng)
            for i in range(n)]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, float]:
    diff = float((a - b).abs().max())
    return diff <= tol * max(1.0, float(b.abs().max())), diff


def _task_in(task: StagedTask, dtype: torch.dtype) -> StagedTask:
    """The same staged data with its float tensors in `dtype`."""
    return dataclasses.replace(task, **{n: getattr(task, n).to(dtype) for n in ("ft_x", "ft_teacher", "val_x",
                                                                               "example_input")})


def _compare(batched: BatchedEvaluator, genomes: list[Genome], cfg: FitnessConfig, steps: int) -> dict[str, Any]:
    """Masked vs pruned logits of each genome, before and after `steps` fine-tune steps, in the batched
    evaluator's dtype; raises Unsupported at once where the forward differs (no fine-tune amplifies that)."""
    task, parent = batched.task, batched.parent
    x = task.val_x[:128]
    dtype = next(iter(batched.params.values())).dtype
    params, buffers = batched.stack(len(genomes))
    # in fp32, as `logits_of` gives the pruned network's: one rounding of the result on both sides
    masked = batched.logits(params, buffers, batched.masks(genomes), x).float().cpu()
    params, buffers, masks, _, _ = batched.finetune(genomes, steps=steps, cfg=cfg)
    tuned = batched.logits(params, buffers, masks, x).float().cpu()
    out: dict[str, Any] = {"forward": [], "finetune": [], "ok": [], "pruned": []}
    for i, g in enumerate(genomes):
        model = materialise(parent, g, task.example_input)
        ok, diff = _close(masked[i], logits_of(model, x), FORWARD_TOL)
        out["forward"].append(diff)
        if not ok:
            raise Unsupported(f"masked forward differs from the pruned network by {diff:.3g}"
                              f"{'' if dtype == torch.float32 else f' in {dtype}'}")
        finetune_and_recalibrate(model, task, parent, steps=steps, cfg=cfg)
        out["pruned"].append(logits_of(model, x))
        ok, diff = _close(tuned[i], out["pruned"][i], FINETUNE_TOL)
        out["finetune"].append(diff)
        out["ok"].append(ok)
    return out


def verify(batched: BatchedEvaluator) -> dict[str, Any]:
    """Raise Unsupported unless masked == pruned, before and after a short fine-tune.

    Exactness is a structural property, so it is checked in fp32 whatever `fitness.precision` is
    (bf16 rounding alone would exceed the tolerances): both forms get fp32 settings explicitly. Some
    parents amplify fp32 rounding itself past FINETUNE_TOL within the probe's steps (torchvision's
    densenet121 at 32x32: a 1-ulp change of the pruned subnet's own weights moves its logits by 0.35-1.3),
    where no masked form can pass; there the same proof is rerun in float64 (where such a parent's masked
    and pruned forms agree to 1e-7), and the fp32 gap must stay within twice the largest fp32 error of the
    pruned subnets themselves (distance from their float64 results): what two fp32 results, each that
    close to the exact one, can differ by. An fp32-only fault of the masked form still fails there.
    """
    task = batched.task
    cfg = dataclasses.replace(task.cfg, precision="fp32")
    genomes = probe_genomes(batched.space, task.seed)
    steps = min(cfg.steps, PROBE_STEPS)
    fp32 = _compare(batched, genomes, cfg, steps)
    evidence = {"max_logit_diff": {"forward": max(fp32["forward"]), "finetune": max(fp32["finetune"])},
                "probe_steps": steps, "probe_genomes": len(genomes)}
    if all(fp32["ok"]):
        return evidence
    fail = f"after {steps} fine-tune steps, masked differs from pruned by {max(fp32['finetune']):.3g}"
    fp64 = _compare(batched.in_dtype(_task_in(task, torch.float64), torch.float64), genomes, cfg, steps)
    if not all(fp64["ok"]):
        raise Unsupported(f"{fail} (and by {max(fp64['finetune']):.3g} in float64)")
    own = [float((a - b).abs().max()) for a, b in zip(fp32["pruned"], fp64["pruned"])]
    if max(fp32["finetune"]) > 2 * max(own):
        raise Unsupported(f"{fail}, more than the pruned subnets' own fp32 rounding explains (gaps "
                          f"{', '.join(f'{d:.3g}' for d in fp32['finetune'])}; their own fp32 error "
                          f"{', '.join(f'{e:.3g}' for e in own)}; equal in float64)")
    evidence.update({"max_logit_diff_fp64": {"forward": max(fp64["forward"]), "finetune": max(fp64["finetune"])},
                     "fp32_rounding": max(own)})
    return evidence


def prefers_batched(device: torch.device) -> bool:
    """The measured rule (results/bench_fitness.md): on a CPU the sequential evaluator, with one
    individual per core, beat the masked batched form for both the digits CNN and ResNet-20 at every
    population size measured (batching pays full-width FLOPs on a compute-bound device); batching is
    for GPUs, where per-step launch overhead dominates.

    A fixed rule rather than a timing at start-up, so that the same config always picks the same
    evaluator (the two agree only within float rounding, and fronts must be reproducible).
    """
    return device.type == "cuda"


def choose_evaluator(task: StagedTask, parent: nn.Module, space: SearchSpace,
                     settings: EvaluatorConfig) -> tuple[Evaluator, dict[str, Any]]:
    """The local evaluator that `settings` (the `evaluator` config section) asks for, with the evidence for
    the choice. Ray's evaluator is made by the Fitness facade; its workers call this on their own devices."""
    kind = settings.kind

    def sequential(reason: str) -> tuple[Evaluator, dict[str, Any]]:
        return SequentialEvaluator(task, parent, settings.threads, settings.pool), {"kind": "sequential",
                                                                                  "reason": reason}

    if kind == "sequential":
        return sequential("configured")
    if task.cfg.kd in FEATURE_KD_LOSSES:
        return sequential(f"{'auto' if kind == 'auto' else 'configured batched'}: fitness.kd={task.cfg.kd} needs "
                          f"the subnets' feature maps; the batched evaluator supports only logit losses "
                          f"({', '.join(LOGIT_KD_LOSSES)})")
    if is_multilabel(task.ft_y):
        return sequential(f"{'auto' if kind == 'auto' else 'configured batched'}: multi-label data; the batched "
                          "evaluator's population losses are single-label")
    if kind == "auto" and not prefers_batched(task.device):
        return sequential("auto: sequential on a CPU (measured faster there; batched is for CUDA)")
    try:
        batched = BatchedEvaluator(task, parent, space, settings.chunk, settings.threads, settings.pool)
        evidence = verify(batched)
    except Unsupported as exc:
        return sequential(f"batched form not exact for this parent: {exc}")
    reason = "configured; proof passed" if kind == "batched" else f"auto: proof passed; batched on {task.device.type}"
    batched.info.update({"kind": "batched", "reason": reason, **evidence})
    return batched, batched.info
