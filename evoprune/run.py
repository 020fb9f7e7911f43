"""Reading a finished (or running) run directory back: front, config, pruned subnets."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, load_config
from .genome import Genome
from .parent import PARENT_WEIGHTS, build_parent, load_state_dict_file
from .prune import materialise


@dataclass
class Run:
    """A run directory: its resolved config, task, front and a way to rebuild any front member."""

    dir: Path
    config: Config
    task: dict[str, Any]
    parent_summary: dict[str, Any]
    front: list[dict[str, Any]]

    def genome(self, i: int) -> Genome:
        if not 0 <= i < len(self.front):
            raise IndexError(f"front member {i} does not exist (the front has {len(self.front)})")
        return Genome.from_json(self.front[i]["genome"])

    def parent(self) -> nn.Module:
        """The run's parent network (eval mode), as the search saw it."""
        model = build_parent(self.config, tuple(self.task["input_shape"]), self.task["n_classes"])
        weights = self.config.parent.weights or self.dir / PARENT_WEIGHTS
        load_state_dict_file(model, weights)
        return model.eval()

    def subnet(self, i: int) -> nn.Module:
        """Front member `i` as a structurally pruned nn.Module (before any final fine-tune)."""
        genome = self.genome(i)
        example = torch.zeros((1, *self.task["input_shape"]))
        return materialise(self.parent(), genome, example).eval()


def load_run(run_dir: str | Path) -> Run:
    run = Path(run_dir)
    for name in ("config.yaml", "task.json", "front.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not an evoprune run directory (no {name})")
    front = json.loads((run / "front.json").read_text())
    return Run(run, load_config(run / "config.yaml"), json.loads((run / "task.json").read_text()),
               front["parent"], front["front"])
