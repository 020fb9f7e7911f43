"""Channel rankings from torch-pruning importance criteria, and building the SearchSpace."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from evoprune.config import SpaceConfig
from evoprune.pruning.groups import all_trainable, build_graph, coupled_modules, prunable_groups
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


def build_space(parent: nn.Module, example_input: torch.Tensor, space_cfg: SpaceConfig,
                criteria: Sequence[str], calib_x: torch.Tensor, calib_y: torch.Tensor) -> SearchSpace:
    """Trace a copy of the parent, list its groups and rank each group's channels per criterion.

    Taylor needs gradients: one cross-entropy backward on the calibration batch (on the copy).
    """
    model = copy.deepcopy(parent).cpu().eval()
    graph = build_graph(model, example_input.cpu())
    groups = prunable_groups(model, graph)
    if not groups:
        raise ValueError("the parent has no prunable channel groups")
    with all_trainable(model):
        model.zero_grad()
        nn.functional.cross_entropy(model(calib_x), calib_y).backward()
    specs, rankings = [], {c: {} for c in criteria if c != "random"}
    if not rankings:  # a random-only population still needs a ranking for repair: use L2
        rankings = {"l2": {}}
    for name, group in groups:
        n = len(group[0].idxs)
        specs.append(GroupSpec(name, n, group_floor(n, space_cfg.min_keep, space_cfg.min_channels,
                                                    space_cfg.round_to), space_cfg.round_to,
                               tuple(coupled_modules(group, model))))
        fallback = None
        for crit in rankings:
            scores = SCORERS[crit]()(group)
            if scores is None:  # e.g. bn_scale on a group with no BatchNorm: fall back to L2
                fallback = fallback or SCORERS["l2"]()(group)
                scores = fallback
            rankings[crit][name] = _order(scores)
    return SearchSpace(specs, rankings)
