"""Channel rankings from torch-pruning importance criteria, and building the SearchSpace."""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from evoprune.config import SpaceConfig
from evoprune.metrics import label_loss
from evoprune.pruning.groups import (all_trainable, build_graph, conv_channel_groups, coupled_modules,
                                     prunable_groups)
from evoprune.pruning.space import GroupSpec, SearchSpace, group_floor

# 'random' has no fixed ranking: the population and mutation draw fresh permutations for it.
SCORERS: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "lamp": lambda: tp.importance.LAMPImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(p=2),
}


def _order(scores: torch.Tensor) -> list[int]:
    """Channel indices by descending score; ties broken by index so rankings are reproducible."""
    s = scores.detach().double().cpu()
    s = torch.nan_to_num(s, nan=float("-inf"))
    return sorted(range(len(s)), key=lambda i: (-float(s[i]), i))


def _periodic_order(scores: torch.Tensor, spec: GroupSpec) -> list[int]:
    """Whole positions by descending summed score of their conv-group copies, each position's copies
    listed together: any prefix of a multiple of G channels is then a periodic (legal) kept set."""
    s = torch.nan_to_num(scores.detach().double().cpu(), nan=float("-inf"))
    return spec.copies(_order(s.view(spec.channel_groups, spec.period).sum(dim=0)))


def _fpgm_safe(group: "tp.Group") -> "tp.Group":
    """The group less its grouped convs' input sides, which torch-pruning 1.6's FPGM cannot score (it
    repeats a 2-D tensor with one count and fails); its other layers still rank the channels."""
    def grouped_input(item: Any) -> bool:  # a torch-pruning GroupItem
        conv = item.dep.target.module  # the test torch-pruning's FPGM repeats on
        return (item.dep.handler == tp.pruner.function.prune_conv_in_channels
                and conv.groups not in (1, conv.in_channels))

    if not any(grouped_input(item) for item in group):
        return group
    safe = tp.Group()
    for item in group:
        if not grouped_input(item):
            safe.add_dep(item.dep, item.idxs)
            safe[len(safe) - 1].root_idxs = item.root_idxs  # the importance reads root indices per item
    return safe


def build_space(parent: nn.Module, example_input: torch.Tensor, space_cfg: SpaceConfig,
                criteria: Sequence[str], calib_x: torch.Tensor, calib_y: torch.Tensor) -> SearchSpace:
    """Trace a copy of the parent, list its groups and rank each group's channels per criterion.

    Taylor needs gradients: one cross-entropy backward on the calibration batch (on the copy).
    """
    model = copy.deepcopy(parent).cpu().eval()
    graph = build_graph(model, example_input.cpu())
    groups = prunable_groups(model, graph, space_cfg.ignore)
    if not groups:
        raise ValueError("the parent has no prunable channel groups")
    with all_trainable(model):
        model.zero_grad()
        label_loss(model(calib_x), calib_y).backward()  # class indices, or multi-label rows
    specs, rankings = [], {c: {} for c in criteria if c != "random"}
    if not rankings:  # a random-only population still needs a ranking for repair: use L2
        rankings = {"l2": {}}
    for name, group in groups:
        n = len(group[0].idxs)
        channel_groups = conv_channel_groups(graph, group)
        periodic = channel_groups is not None and n % channel_groups == 0
        if periodic:
            floor = group_floor(n, space_cfg.min_keep, space_cfg.min_channels, space_cfg.round_to, channel_groups)
        else:
            # No kept subset is safe for its grouped convs (they see the group's channels through a
            # concat/split, or G does not divide the width): the group keeps all its channels.
            channel_groups, floor = 1, n
        spec = GroupSpec(name, n, floor, space_cfg.round_to, tuple(coupled_modules(group, model)), channel_groups)
        specs.append(spec)
        if not periodic or channel_groups == n:
            # All channels is the only legal kept set (G == n is one position, e.g. a conv with groups ==
            # in_channels < out_channels, which torch-pruning's importances cannot score): nothing to rank.
            for crit in rankings:
                rankings[crit][name] = list(range(n))
            continue
        fallback = None
        for crit in rankings:
            scores = SCORERS[crit]()(_fpgm_safe(group) if crit == "fpgm" else group)
            if scores is None:  # e.g. bn_scale on a group with no BatchNorm: fall back to L2
                if fallback is None:
                    fallback = SCORERS["l2"]()(group)
                scores = fallback
            rankings[crit][name] = _order(scores) if channel_groups == 1 else _periodic_order(scores, spec)
    return SearchSpace(specs, rankings)
