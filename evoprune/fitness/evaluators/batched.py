"""Batched evaluator: a whole population fine-tuned at once in the parent's coordinates.

Each individual is the parent's parameters times its channel masks; `torch.func.vmap` over
`functional_call` runs every individual on the same batch in one step. A masked channel is zero
everywhere downstream in conv/BN/linear networks, so this equals the structurally pruned network
(up to float rounding); `choose.verify` checks that on the actual parent before it is trusted.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from evoprune.config import FitnessConfig
from evoprune.fitness.evaluators.sequential import SequentialEvaluator
from evoprune.fitness.losses import logit_kd_per_model
from evoprune.fitness.precision import Scaler, autocast
from evoprune.fitness.recipe import make_optimizer, recalibrate_bn
from evoprune.fitness.scoring import checks_regression, genome_objectives
from evoprune.fitness.staged import StagedTask
from evoprune.genome import Genome
from evoprune.objectives import Objectives
from evoprune.pruning.groups import build_graph, prunable_groups
from evoprune.pruning.space import SearchSpace

_EXACT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


class Unsupported(Exception):
    """The parent has a layer for which masking is not the same as pruning."""


@dataclass(frozen=True)
class MaskedParam:
    """Parameter `name` loses index `local[j]` of dimension `dim` when the group drops channel `root[j]`."""

    name: str
    group: str
    dim: int
    local: torch.Tensor  # (k,) long
    root: torch.Tensor  # (k,) long


def mask_plan(parent: nn.Module, example_input: torch.Tensor) -> list[MaskedParam]:
    """Which parameter slices each group's channels own, from torch-pruning's groups."""
    model = copy.deepcopy(parent).cpu()
    dropout = [n for n, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if dropout:  # random ops under vmap would need per-individual generators
        raise Unsupported(f"dropout ({dropout[0]}) is not supported by the batched form")
    graph = build_graph(model, example_input.cpu())
    names = {m: n for n, m in model.named_modules()}
    plan: list[MaskedParam] = []
    for gname, group in prunable_groups(model, graph):
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or not any(True for _ in module.parameters(recurse=False)):
                continue
            if not isinstance(module, _EXACT_TYPES):
                raise Unsupported(f"{type(module).__name__} ({names.get(module)}) in group {gname} mixes channels")
            if not graph.is_out_channel_pruning_fn(item.dep.handler):
                continue  # inputs of removed channels are zero already: nothing to mask
            local = torch.as_tensor([int(i) for i in item.idxs], dtype=torch.long)
            root = torch.as_tensor([int(i) for i in item.root_idxs], dtype=torch.long)
            dim = 1 if getattr(module, "transposed", False) else 0
            for pname, p in module.named_parameters(recurse=False):
                plan.append(MaskedParam(f"{names[module]}.{pname}", gname, dim if p.dim() > 1 else 0, local, root))
    return plan


class BatchedEvaluator:
    """Masked population fine-tune with vmap; chunks the population to fit memory.

    `chunk`: `evaluator.chunk` (0: the whole population at once; halved on CUDA out-of-memory);
    `threads`, `pool`: the sequential evaluator's settings, for the fallback when not even one masked
    individual fits. `info` is the choice's record; a fallback notes itself there.
    """

    kind = "batched"

    def __init__(self, task: StagedTask, parent: nn.Module, space: SearchSpace, chunk: int = 0,
                 threads: int = 0, pool: str = "auto"):
        self.task, self.parent, self.space = task, parent, space
        self.chunk = chunk
        self._fallback_settings = (threads, pool)
        self.info: dict = {"kind": self.kind}
        self.model = copy.deepcopy(parent)
        # groups outside the space (space.ignore) keep all their channels, as `materialise` leaves them
        names = set(space.names)
        self.plan = [mp for mp in mask_plan(parent, task.example_input) if mp.group in names]
        self.params = {n: p.detach() for n, p in self.model.named_parameters()}
        self.trainable = {n: p.requires_grad for n, p in parent.named_parameters()}
        self._fallback: SequentialEvaluator | None = None
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}

    def in_dtype(self, task: StagedTask, dtype: torch.dtype) -> "BatchedEvaluator":
        """A copy computing in `dtype` on `task` (the same staged data in that dtype); the mask plan is reused."""
        other = copy.copy(self)
        other.task, other.parent = task, copy.deepcopy(self.parent).to(dtype)
        other.model = copy.deepcopy(self.model).to(dtype)
        other.params = {n: p.detach() for n, p in other.model.named_parameters()}
        other.buffers = {n: b.detach() for n, b in other.model.named_buffers()}
        other.info, other._fallback = {"kind": self.kind}, None
        return other

    # -- masks -----------------------------------------------------------------------------
    def masks(self, genomes: list[Genome]) -> dict[str, torch.Tensor]:
        """Per-parameter masks of shape (P, *broadcastable param shape) on the device."""
        device = self.task.device
        out: dict[str, torch.Tensor] = {}
        for mp in self.plan:
            shape = self.params[mp.name].shape
            n = shape[mp.dim]
            n_root = self.space.group(mp.group).n_channels
            # ones outside this group's slice: a parameter that several groups share (a BatchNorm after a
            # concat, as in DenseNet) gets one entry per group, and their masks are multiplied
            m = torch.ones(len(genomes), n)
            for i, g in enumerate(genomes):
                keep_root = torch.zeros(n_root, dtype=torch.bool)
                keep_root[list(g[mp.group])] = True
                m[i, mp.local] = keep_root[mp.root].float()
            view = [len(genomes)] + [1] * len(shape)
            view[1 + mp.dim] = n
            prev = out.get(mp.name)
            m = m.view(view).to(device)
            out[mp.name] = m if prev is None else prev * m
        return out

    # -- batched forward -------------------------------------------------------------------
    def _forward(self, params: dict, buffers: dict, masks: dict, x: torch.Tensor) -> torch.Tensor:
        def one(p: dict, b: dict, m: dict) -> torch.Tensor:
            eff = {n: (v * m[n] if n in m else v) for n, v in p.items()}
            return functional_call(self.model, (eff, b), (x,))

        return vmap(one, in_dims=(0, 0, 0))(params, buffers, masks)

    def stack(self, n: int) -> tuple[dict, dict]:
        """`n` copies of the parent's parameters and buffers, stacked on a new dimension 0 (the
        population), ready for `logits` with `masks`."""
        # Frozen parameters stay frozen, as in the pruned subnets (materialise keeps the flags).
        params = {k: v.unsqueeze(0).repeat(n, *[1] * v.dim()).clone().requires_grad_(self.trainable[k])
                  for k, v in self.params.items()}
        buffers = {k: v.unsqueeze(0).repeat(n, *[1] * v.dim()).clone() for k, v in self.buffers.items()}
        return params, buffers

    def finetune(self, genomes: list[Genome], steps: int | None = None, cfg: FitnessConfig | None = None):
        """KD fine-tune of all genomes together; returns (params, buffers, masks, tail loss (P,), finite (P,)).
        `cfg`: other recipe settings than the task's (e.g. fp32 for the proof)."""
        cfg = self.task.cfg if cfg is None else cfg
        device = self.task.device
        steps = cfg.steps if steps is None else steps
        n = len(genomes)
        params, buffers = self.stack(n)
        masks = self.masks(genomes)
        tail_start = steps - max(1, steps // 5)
        tail = torch.zeros(n, device=device)
        finite = torch.ones(n, dtype=torch.bool, device=device)
        if steps:
            opt = make_optimizer(params.values(), cfg)
            scaler = Scaler(cfg, device)
            self.model.train()
            for step in range(steps):
                x, y, t = self.task.batch(step)
                with autocast(cfg, device):
                    out = self._forward(params, buffers, masks, x)
                losses = logit_kd_per_model(cfg.kd, out.float(), t, y, cfg.temperature, cfg.alpha)
                # Tensors, not .item(): no host synchronisation inside the step loop.
                finite &= torch.isfinite(losses)
                opt.zero_grad(set_to_none=True)
                scaler.backward(torch.where(finite, losses, torch.zeros_like(losses)).sum())
                if cfg.grad_clip:
                    scaler.unscale(opt)
                    _clip_per_individual(list(params.values()), cfg.grad_clip)
                scaler.step(opt)
                if step >= tail_start:
                    tail += losses.detach()
            tail /= steps - tail_start
        if cfg.adaptive_bn:
            detached = {k: v.detach() for k, v in params.items()}
            recalibrate_bn(self.model, self.task, cfg.adaptive_bn,
                           forward=lambda x: self._forward(detached, buffers, masks, x))
        self.model.eval()
        return params, buffers, masks, tail, finite

    @torch.no_grad()
    def logits(self, params: dict, buffers: dict, masks: dict, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Eval-mode outputs of every individual: (P, N, C)."""
        self.model.eval()
        detached = {k: v.detach() for k, v in params.items()}
        return torch.cat([self._forward(detached, buffers, masks, x[i:i + batch])
                          for i in range(0, len(x), batch)], dim=1)

    @torch.no_grad()
    def accuracy_before(self, genomes: list[Genome]) -> torch.Tensor:
        """Every genome's score before its fine-tune, after adaptive BN: (P,), as `score_before`."""
        params, buffers = self.stack(len(genomes))
        masks = self.masks(genomes)
        recalibrate_bn(self.model, self.task, self.task.cfg.adaptive_bn,
                       forward=lambda x: self._forward(params, buffers, masks, x))
        logits = self.logits(params, buffers, masks, self.task.val_x)
        return (logits.argmax(-1) == self.task.val_y.unsqueeze(0)).float().mean(-1)

    # -- the evaluator interface -----------------------------------------------------------
    def evaluate(self, genomes: list[Genome], on_done: Callable[[int], None] | None = None) -> list[Objectives]:
        if self._fallback is not None:
            return self._fallback.evaluate(genomes, on_done)
        out: list[Objectives] = []
        size = self.chunk or len(genomes)
        i = 0
        while i < len(genomes):
            part = genomes[i:i + size]
            try:
                out.extend(self.evaluate_chunk(part))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if size == 1:  # not even one masked individual fits: the pruned shapes are smaller
                    warnings.warn("CUDA out of memory with one individual per batched step; "
                                  "evaluating from now on sequentially, in the pruned shapes")
                    self._fallback = SequentialEvaluator(self.task, self.parent, *self._fallback_settings)
                    self.info["fallback"] = "sequential after CUDA out-of-memory"
                    out.extend(self._fallback.evaluate(genomes[i:], on_done))
                    return out
                size = max(1, size // 2)  # halve the chunk and retry the same genomes
                self.chunk = size  # and remember it for the next generations
                continue
            i += len(part)
            if on_done:
                on_done(len(part))
        return out

    def evaluate_chunk(self, genomes: list[Genome]) -> list[Objectives]:
        """One batched fine-tune of all `genomes` and their objectives (no chunking, no out-of-memory handling)."""
        start = time.perf_counter()
        before = self.accuracy_before(genomes).cpu().tolist() if checks_regression(self.task) else [None] * len(genomes)
        params, buffers, masks, tail, finite = self.finetune(genomes)
        logits = self.logits(params, buffers, masks, self.task.val_x)
        acc = (logits.argmax(-1) == self.task.val_y.unsqueeze(0)).float().mean(-1)
        acc, tail, finite = acc.cpu().tolist(), tail.cpu().tolist(), finite.cpu().tolist()
        per = (time.perf_counter() - start) / len(genomes)
        steps = self.task.cfg.steps
        return [genome_objectives(self.task, self.parent, g, a if ok else 0.0, loss if steps else float("nan"), ok, per, b)
                for g, a, loss, ok, b in zip(genomes, acc, tail, finite, before)]

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()


def _clip_per_individual(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ for each individual separately (dimension 0 of every stacked parameter)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (P,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
