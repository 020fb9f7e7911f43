"""Before any training: can torch-pruning trace the parent and prune each of its groups? One line naming the
layers where it cannot, and how to leave them unpruned (space.ignore)."""
from __future__ import annotations

import traceback

import torch
from torch import nn

from evoprune.config import SpaceConfig
from evoprune.genome import Genome
from evoprune.pruning.groups import build_graph
from evoprune.pruning.importance import build_space
from evoprune.pruning.materialise import materialise
from evoprune.pruning.space import SearchSpace


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}{': ' + text[:160] if text else ''}"


def _where(err: BaseException) -> str:
    """The torch-pruning function an error came from, if it came from torch-pruning."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "torch_pruning" in f.filename]
    return f" in torch-pruning's {frames[-1].name}" if frames else ""


def _runs(parent: nn.Module, genome: Genome, example: torch.Tensor, n_out: int) -> str | None:
    """Why the pruned subnet of `genome` does not run (or gives the wrong shape), or None."""
    try:
        model = materialise(parent, genome, example)
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as err:  # whatever the user's layers raise: reported, with where it came from
        return _short(err) + _where(err)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(example), n_out):
        return f"the pruned model returns {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
    return None


def _halved(space: SearchSpace, names: list[str]) -> Genome:
    """Every group in `names` at its legal count nearest half, the others whole."""
    keep = {g.name: (0.5 if g.name in names else 1.0) for g in space.groups}
    return space.from_keep_ratios(keep)


def prune_problem(parent: nn.Module, example: torch.Tensor, space_cfg: SpaceConfig) -> str | None:
    """Why torch-pruning cannot prune `parent` (an untrained copy is enough: only its structure counts), naming
    the layers; None when it traces and a subnet halving every group runs with the right output shape."""
    model = parent.cpu().eval()
    example = example.cpu()
    try:
        build_graph(model, example)
    except Exception as err:  # torch-pruning's own tracing errors are of any type
        return (f"torch-pruning cannot trace this model ({_short(err)}{_where(err)}); an op it cannot follow, "
                "e.g. a reshape that regroups channels (a channel shuffle), cannot be left out with space.ignore")
    try:
        space = build_space(model, example, space_cfg, ["l2"], example, torch.zeros(len(example), dtype=torch.long))
    except ValueError as err:  # space.ignore naming no module, or nothing prunable left
        return str(err)
    except Exception as err:
        return f"torch-pruning cannot rank its channels ({_short(err)}{_where(err)})"
    with torch.no_grad():
        n_out = model(example).shape[-1]
    names = space.names
    problem = _runs(model, _halved(space, names), example, n_out)
    if problem is None:
        return None
    while len(names) > 1:  # bisect to one group whose pruning alone fails
        half = names[: len(names) // 2]
        failing = half if _runs(model, _halved(space, half), example, n_out) else names[len(half):]
        if failing is not half and _runs(model, _halved(space, failing), example, n_out) is None:
            break  # only the two halves together fail: report the first group of the set
        names = failing
    group = space.group(names[0])
    layers = ", ".join(group.modules[:4]) + (", ..." if len(group.modules) > 4 else "")
    alone = _runs(model, _halved(space, [group.name]), example, n_out) or problem
    return (f"torch-pruning cannot prune the channels of {layers}: a subnet pruning them fails ({alone}); leave "
            f"them unpruned with space.ignore: [{group.name}]")
