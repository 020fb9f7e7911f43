"""`evoprune.search(model, train, val)`: a search of the user's own trained model on their own data, into a
run directory that `load_run`, distill and export read like a CLI search's."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from evoprune.atomic import atomic_write, write_json
from evoprune.config import Config, apply_overrides, config_from_dict, save_config
from evoprune.evolve.callbacks import SearchCallback
from evoprune.run.files import CONFIG, PARENT_WEIGHTS, PYTHON_INPUTS, RUN_MARKERS
from evoprune.run.reader import Run, load_run
from evoprune.run.search import RunDirSearch
from evoprune.run.writer import RESUME_OVERRIDABLE, RunWriter, pin_evaluator, resume_changes

if TYPE_CHECKING:
    from evoprune.evolve.state import SearchState
    from evoprune.fitness.facade import Fitness


class _KeepParent(SearchCallback):
    """Writes, when a fresh search starts (after the writer has cleared the directory), the parent's
    state_dict and what the search was given: the model's class (rebuilt by the user, as no config can)."""

    def __init__(self, run_dir: Path, given_test: bool):
        self.dir = run_dir
        self.given_test = given_test

    def on_start(self, state: "SearchState", fitness: "Fitness") -> None:
        if state.generation >= 0:  # a resumed search: written when it started
            return
        parent = copy.deepcopy(fitness.parent).cpu().eval()
        atomic_write(self.dir / PARENT_WEIGHTS, lambda fh: torch.save(parent.state_dict(), fh), binary=True)
        write_json(self.dir / PYTHON_INPUTS, {
            "model_class": fitness.parent_meta.get("class"), "test_given": self.given_test,
            "given": "the model and data were objects: load_run(run_dir, model=..., train=..., val=..., test=...) "
                     "takes them again (the model's weights are loaded from parent.pt)"})


def _config(config: Config | str | Path | None, overrides: Sequence[str]) -> Config:
    from evoprune.fitness.facade import user_config

    cfg = user_config(config)
    return config_from_dict(apply_overrides(cfg.to_dict(), list(overrides))) if overrides else cfg


def search(model: nn.Module, train: Any, val: Any, *, test: Any = None, config: Config | str | Path | None = None,
           overrides: Sequence[str] = (), out: str | Path = "runs/search", resume: bool = False, force: bool = False,
           progress: bool = True, customized_pruners: dict | None = None,
           unwrapped_parameters: dict | None = None) -> Run:
    """Search structurally pruned subnets of your trained classifier `model` on your own data; the run
    directory `out` is written as the CLI's (front.json, evaluations.csv, plots, checkpoints) and returned
    as a `Run` holding your objects, so `run.subnet(k)`, `evoprune.deploy.export(run, k, dir)` and
    `evoprune.deploy.run_distill(run, run.config, k)` work on it.

    `train`, `val` (and `test`, for final reports; val where absent): map-style Datasets of (input tensor,
    class index) or (x, y) tensor pairs; the search reads only the fitness' rows. `model` is deep-copied,
    never trained or moved; its weights are saved in the run (parent.pt), its class is yours to give again.
    `config`: a Config, a YAML path or None (defaults; its data and parent sections are unused);
    `overrides`: `["search.generations=3", ...]` as `--set`. `resume=True` continues `out`'s checkpoint (same
    config, model and data); a directory holding another run needs `force=True`. `customized_pruners`,
    `unwrapped_parameters`: torch-pruning's, for layers it does not know (see `Fitness.from_model`).
    """
    from evoprune.fitness.facade import user_fitness

    cfg = _config(config, overrides)
    run_dir = Path(out)
    writer = RunWriter(run_dir)
    if resume:
        if not (run_dir / PYTHON_INPUTS).is_file():
            raise ValueError(f"{run_dir} holds no search started by evoprune.search; resume it with `python -m "
                             f"evoprune search --resume {run_dir}`")
        _, checkpoint, _ = writer.load_checkpoint()  # CheckpointError when there is none
        changed = resume_changes(checkpoint.get("config") or {}, cfg.to_dict())
        if changed:
            raise ValueError(f"{run_dir} was searched with another config ({', '.join(changed[:3])} differ): a resume "
                             f"may change only {', '.join(RESUME_OVERRIDABLE)}; give the run's config")
        cfg = pin_evaluator(cfg, checkpoint.get("evaluator"))
        save_config(cfg, run_dir / CONFIG)  # the new budget belongs to the run from now on
    elif run_dir.exists() and not force and any((run_dir / name).exists() for name in RUN_MARKERS):
        raise FileExistsError(f"{run_dir} already holds an evoprune run; continue it with resume=True or replace "
                              "it with force=True")
    fitness = user_fitness(model, train, val, cfg, customized_pruners, unwrapped_parameters)
    if progress:
        print(f"parent {fitness.parent_meta['class']}: val acc {fitness.parent_accuracy:.4f}, "
              f"{fitness.parent_n_params:,} params, {fitness.parent_macs:,} MACs; {len(fitness.space.groups)} "
              f"prunable groups; evaluator {fitness.evaluator.kind} ({fitness.evaluator_info['reason']})", flush=True)
    RunDirSearch(fitness, run_dir, progress=progress,
                 callbacks=[_KeepParent(run_dir, test is not None)]).run(resume=resume)
    return load_run(run_dir, model=model, train=train, val=val, test=test)
