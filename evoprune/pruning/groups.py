"""Tracing a model with torch-pruning: its prunable channel groups in layer order."""
from __future__ import annotations

import difflib
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch_pruning as tp
from torch import nn

from evoprune.parent.models import classifier_of


@contextmanager
def all_trainable(model: nn.Module) -> Iterator[None]:
    """torch-pruning traces through autograd and skips frozen parameters; unfreeze while tracing."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


@dataclass
class CustomLayers:
    """torch-pruning's hooks for layers it does not know, for every graph evoprune builds in this process
    (the parent's copies, subnets, forked evaluator workers): pruners by layer type or by module name, and
    the pruning dimension of parameters outside standard layers by name (names survive a deep copy)."""

    pruners: dict[Any, Any] = field(default_factory=dict)  # layer type or module name -> tp BasePruningFunc
    unwrapped: dict[str, int] = field(default_factory=dict)  # parameter name -> dimension to prune

    def __bool__(self) -> bool:
        return bool(self.pruners or self.unwrapped)


CUSTOM = CustomLayers()


def use_custom_layers(model: nn.Module, customized_pruners: dict | None = None,
                      unwrapped_parameters: dict | None = None) -> None:
    """Give torch-pruning `customized_pruners` ({layer type or a module of `model`: pruner}) and
    `unwrapped_parameters` ({parameter of `model` or its name: dim}) for every graph from now on in this
    process; None for both clears them. TypeError/ValueError for keys that are neither."""
    modules = {m: n for n, m in model.named_modules()}
    params = {p: n for n, p in model.named_parameters()}
    pruners: dict[Any, Any] = {}
    for key, pruner in (customized_pruners or {}).items():
        if not isinstance(pruner, tp.pruner.BasePruningFunc):
            raise TypeError(f"customized_pruners[{key!r}] is {type(pruner).__name__}, expected a torch-pruning "
                            "BasePruningFunc")
        if isinstance(key, nn.Module):
            if key not in modules:
                raise ValueError(f"customized_pruners: {type(key).__name__} is not a module of the model")
            key = modules[key]
        elif not (isinstance(key, type) and issubclass(key, nn.Module)):
            raise TypeError(f"customized_pruners keys are layer types or modules of the model, got {key!r}")
        pruners[key] = pruner
    unwrapped: dict[str, int] = {}
    names = set(params.values())
    for key, dim in (unwrapped_parameters or {}).items():
        name = params.get(key) if isinstance(key, nn.Parameter) else key
        if name not in names:
            raise ValueError(f"unwrapped_parameters: {key if isinstance(key, str) else 'a parameter'} is not a "
                             "parameter of the model")
        unwrapped[name] = int(dim)
    CUSTOM.pruners, CUSTOM.unwrapped = pruners, unwrapped


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    pruners = {(modules[k] if isinstance(k, str) else k): v for k, v in CUSTOM.pruners.items()
               if not isinstance(k, str) or k in modules}
    unwrapped = [(params[n], d) for n, d in CUSTOM.unwrapped.items() if n in params]
    with all_trainable(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False,
                                                     customized_pruners=pruners or None,
                                                     unwrapped_parameters=unwrapped or None)


LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)  # the layers whose output channels groups are rooted at


def ignored_layers(model: nn.Module, ignore: Sequence[str] = ()) -> list[nn.Module]:
    """The classifier, and every conv or linear layer in the modules named in `ignore` (space.ignore);
    ValueError naming an unknown module."""
    names = dict(model.named_modules())
    layers = [classifier_of(model)]
    for name in ignore:
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=3)
            raise ValueError(f"{name!r} is not a module of the parent"
                             f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}")
        layers += [m for m in names[name].modules() if isinstance(m, LAYER_TYPES)]
    return layers


def prunable_groups(model: nn.Module, graph: tp.DependencyGraph, ignore: Sequence[str] = ()
                    ) -> list[tuple[str, "tp.Group"]]:
    """(name, full-index group) for every group whose output channels may be pruned, in layer order.

    A group is named after its first layer (in definition order) whose outputs it prunes, e.g. a
    residual group after the block's conv rather than the shortcut torch-pruning happens to trace
    first. The classifier's outputs (the classes) are excluded, and so is any group that would prune
    the outputs of a layer in `ignore` (space.ignore).
    """
    position = {m: i for i, (_, m) in enumerate(model.named_modules())}
    names = {m: n for n, m in model.named_modules()}
    layer_types = LAYER_TYPES
    named = []
    for g in graph.get_all_groups(ignored_layers=ignored_layers(model, ignore), root_module_types=layer_types):
        outs = [dep.target.module for dep, _ in g
                if isinstance(dep.target.module, layer_types) and graph.is_out_channel_pruning_fn(dep.handler)]
        first = min(outs or [g[0].dep.target.module], key=lambda m: position.get(m, len(position)))
        named.append((position.get(first, len(position)), names[first], g))
    return [(name, g) for _, name, g in sorted(named, key=lambda t: t[0])]


def coupled_modules(group: "tp.Group", model: nn.Module) -> list[str]:
    """Names of the modules whose channels the group removes together."""
    names = {m: n for n, m in model.named_modules()}
    seen: list[str] = []
    for dep, _ in group:
        name = names.get(dep.target.module)
        if name and name not in seen:
            seen.append(name)
    return seen


def conv_channel_groups(graph: tp.DependencyGraph, group: "tp.Group") -> int | None:
    """G of a full-index group: the lcm of the conv groups of its non-depthwise grouped convs on the
    side it prunes and of its GroupNorms' groups (1 when it has none); None when such a layer cannot be
    pruned periodically by it.

    torch-pruning keeps a grouped conv's `groups` and slices its weight as if the kept channels were
    the same positions in every conv group; depthwise convs (groups == out_channels) are pruned
    in/out together instead and need nothing, as in torch-pruning's own MetaPruner.
    """
    n = len(group[0].idxs)
    lcm = 1
    for item in group:
        conv, handler = item.dep.target.module, item.dep.handler
        if isinstance(conv, nn.GroupNorm) and conv.num_groups > 1:
            # torch-pruning keeps num_groups too: periodic kept channels keep each norm group's own channels
            one_to_one = list(item.idxs) == list(getattr(item, "root_idxs", item.idxs)) == list(range(conv.num_channels))
            if conv.num_channels != n or not one_to_one:
                return None
            lcm = math.lcm(lcm, conv.num_groups)
            continue
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.groups == 1 or conv.groups == conv.out_channels:
            continue
        width = conv.out_channels if graph.is_out_channel_pruning_fn(handler) else conv.in_channels
        # Periodic in the group's coordinates is periodic in the conv's only when the group reaches all
        # of the conv's channels one to one (not through a concat or split); torch-pruning also slices
        # a grouped transposed conv's weight on the wrong dimension.
        one_to_one = list(item.idxs) == list(getattr(item, "root_idxs", item.idxs)) == list(range(width))
        if conv.transposed or width != n or not one_to_one:
            return None
        lcm = math.lcm(lcm, conv.groups)
    return lcm
