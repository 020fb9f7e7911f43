"""Genome -> structurally pruned nn.Module; the parent is deep-copied and never touched."""
from __future__ import annotations

import copy

import torch
from torch import nn

from evoprune.genome import Genome
from evoprune.pruning.groups import build_graph, prunable_groups


def materialise(parent: nn.Module, genome: Genome, example_input: torch.Tensor) -> nn.Module:
    """A copy of `parent` with each group's channels outside `genome[group]` really removed.

    Every group is pruned through a graph built on the copy: torch-pruning takes the indices to
    *remove*. Groups prune disjoint output channels, so one group's pruning does not renumber
    another's kept indices (they stay in the parent's coordinates).
    """
    model = copy.deepcopy(parent)
    # torch-pruning replaces pruned parameters with fresh (trainable) ones; keep the parent's flags,
    # so a transfer-learning parent's frozen layers stay frozen in every subnet.
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    device = next(model.parameters()).device
    graph = build_graph(model, example_input.to(device))
    groups = dict(prunable_groups(model, graph))
    unknown = set(genome) - set(groups)
    if unknown:  # groups the genome leaves out (space.ignore) keep all their channels
        raise ValueError(f"genome groups {sorted(unknown)} are not groups of the parent ({sorted(groups)[:5]}...)")
    for name, kept in genome.items():
        group = groups[name]
        n_channels = len(group[0].idxs)
        remove = sorted(set(range(n_channels)) - set(kept))
        if len(remove) >= n_channels:
            raise ValueError(f"group {name}: a genome must keep at least one channel")
        if remove:
            group.prune(idxs=remove)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable.get(name, True))
    return model
