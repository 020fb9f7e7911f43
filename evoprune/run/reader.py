"""Reading a finished (or running) run directory back: front, config, pruned subnets."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.config import Config, load_config
from evoprune.data.taskdata import TaskData
from evoprune.genome import Genome
from evoprune.parent.train import build_parent, load_state_dict_file
from evoprune.pruning.materialise import materialise
from evoprune.run.files import (CONFIG, DEFAULT_WEIGHTS, DISTILL_METRICS, DISTILLED_MODEL, FRONT_JSON,
                                PARENT_WEIGHTS, PYTHON_INPUTS, SPACE, TASK, WEIGHTS, distill_dir)


@dataclass
class GivenInputs:
    """The objects a search started in Python was given (`evoprune.search`), which no file can hold: the
    user's model (an instance of its class: the run holds its weights) and their train, val and (optional)
    test data."""

    model: nn.Module | None = None
    train: Any = None
    val: Any = None
    test: Any = None


@dataclass
class Run:
    """A run directory: its resolved config, task, front and a way to rebuild any front member."""

    dir: Path
    config: Config
    task: dict[str, Any]
    parent_summary: dict[str, Any]
    front: list[dict[str, Any]]
    python: dict[str, Any] | None = None  # python_inputs.json of a search started by `evoprune.search`
    given: GivenInputs = field(default_factory=GivenInputs, repr=False, compare=False)
    _fitness: Any = field(default=None, init=False, repr=False, compare=False)
    _data: TaskData | None = field(default=None, init=False, repr=False, compare=False)

    def genome(self, i: int) -> Genome:
        if not 0 <= i < len(self.front):
            raise IndexError(f"front member {i} does not exist (the front has {len(self.front)})")
        return Genome.from_json(self.front[i]["genome"])

    def parent(self) -> nn.Module:
        """The run's parent network (eval mode), as the search saw it."""
        if self.python is not None:
            return self._given_parent()
        model = build_parent(self.config.parent, tuple(self.task["input_shape"]), self.task["n_classes"])
        load_state_dict_file(model, self.parent_weights)
        return model.eval()

    def _given_parent(self) -> nn.Module:
        """A search from Python: the model given to load_run (a copy), with the searched parent's weights."""
        if self.given.model is None:
            raise ValueError(f"{self.dir}'s parent is a {self.python.get('model_class')}, which no file can rebuild: "
                             "pass an instance, evoprune.load_run(run_dir, model=...) (its weights come from "
                             f"{PARENT_WEIGHTS})")
        model = copy.deepcopy(self.given.model).cpu()
        load_state_dict_file(model, self.parent_weights)
        return model.eval()

    def data_problem(self) -> str | None:
        """Why this run's data cannot be had (a search from Python whose model, train and val were not given
        again)."""
        given = self.given
        if self.python is None or all(v is not None for v in (given.model, given.train, given.val)):
            return None
        return (f"{self.dir} was searched from Python on data objects (evoprune.search), which a run directory "
                "does not hold: in Python, run = evoprune.load_run(run_dir, train=..., val=..., test=..., "
                "model=...) and pass that run to distill or export")

    def task_data(self) -> TaskData:
        """The task's whole splits, for final distillation and test reports: the configured data, or for a
        search from Python the given train, val and test (val where no test was given), whole up to the
        `data.max_*_samples` caps, as given (a Dataset's inputs read when used, not held)."""
        problem = self.data_problem()
        if problem:
            raise ValueError(problem)
        if self._data is None:
            if self.python is None:
                from evoprune.data.task import load_task

                self._data = self._fitness.data if self._fitness is not None else load_task(self.config)
            else:
                from evoprune.data.user import given_task

                d = self.config.data
                test = self.given.test if self.given.test is not None else self.given.val
                data = given_task((self.given.train, self.given.val, test),
                                  (d.max_train_samples, d.max_eval_samples, d.max_eval_samples),
                                  self.config.seed, None, "data", images=False, workers=d.workers)
                # the model's outputs, as the search had them (labels need not reach the last class)
                self._data = replace(data, n_classes=int(self.task["n_classes"]))
        return self._data

    @property
    def parent_weights(self) -> Path:
        """The parent's state_dict file: `parent.weights` if configured, else the run's cached parent."""
        return Path(self.config.parent.weights) if self.config.parent.weights else self.dir / PARENT_WEIGHTS

    def fitness(self) -> Any:
        """The search's Fitness rebuilt from the run's files (its data, parent and space.json; nothing is
        trained or traced), evaluating sequentially: the same staged batches, so the same fine-tunes."""
        if self._fitness is None:
            from evoprune.data.task import load_task
            from evoprune.fitness.facade import Fitness
            from evoprune.pruning.space import SearchSpace

            cfg = replace(self.config, evaluator=replace(self.config.evaluator, kind="sequential", backend="local"))
            space = SearchSpace.from_json(json.loads((self.dir / SPACE).read_text()))
            if self.python is None:
                self._fitness = Fitness(cfg, load_task(cfg), self.parent(), space, {"source": "run"})
            else:  # the given data staged as the search staged them: the same rows, so the same fine-tunes
                from evoprune.fitness.facade import user_parent_and_data

                problem = self.data_problem()
                if problem:
                    raise ValueError(problem)
                parent, data, meta = user_parent_and_data(self.parent(), self.given.train, self.given.val, cfg)
                self._fitness = Fitness(cfg, data, parent, space, meta)
        return self._fitness

    def subnet(self, i: int, weights: str = DEFAULT_WEIGHTS) -> nn.Module:
        """Front member `i` as a structurally pruned nn.Module (eval mode, CPU), with these `weights`:

        - `finetuned` (default): the short KD fine-tune (and adaptive BN) the search ran, run again:
          fitness depends only on the genome and the seed, so these are the weights front.json's
          accuracy came from (bit for bit where the search ran sequentially on a CPU);
        - `pruned`: the parent's weights of the kept channels, before any fine-tune;
        - `distilled`: `evoprune distill`'s weights (RUN_DIR/distill-i/model.pt).
        """
        problem = self.weights_problem(i, weights)
        if problem:
            raise ValueError(problem)
        genome = self.genome(i)
        if weights == "finetuned":
            from evoprune.fitness.recipe import finetune_and_recalibrate, one_thread_on_cpu

            fitness = self.fitness()
            model = materialise(fitness.parent, genome, fitness.example_input)
            with one_thread_on_cpu(fitness.device):
                finetune_and_recalibrate(model, fitness.task, fitness.parent)
            return model.cpu().eval()
        example = torch.zeros((1, *self.task["input_shape"]))
        model = materialise(self.parent(), genome, example).eval()
        if weights == "distilled":
            path = distill_dir(self.dir, i) / DISTILLED_MODEL
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model

    def weights_problem(self, i: int, weights: str) -> str | None:
        """Why front member `i` cannot be had with `weights`, or None."""
        if weights not in WEIGHTS:
            return f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}"
        if not 0 <= i < len(self.front):
            return f"front member {i} does not exist (the front of {self.dir} has members 0..{len(self.front) - 1})"
        if weights == "distilled":
            path = distill_dir(self.dir, i) / DISTILLED_MODEL
            if not path.is_file():
                return (f"no distilled weights for front member {i} ({path}); run "
                        f"`python -m evoprune distill {self.dir} --pick {i}` first")
            made_for = _distilled_genome_key(path.parent)
            if made_for is not None and made_for != self.genome(i).key():
                return (f"{path} was distilled from genome {made_for}, but front member {i} is now "
                        f"{self.genome(i).key()} (the front changed); distill it again")
        return None

    def val_accuracy(self, model: nn.Module) -> float:
        """`model`'s accuracy on the validation inputs the search scored (as the search scored them)."""
        from evoprune.fitness.recipe import one_thread_on_cpu

        fitness = self.fitness()
        with one_thread_on_cpu(fitness.device):
            return fitness.val_accuracy(model.to(fitness.device))


def _distilled_genome_key(directory: Path) -> str | None:
    """The genome a distill-K directory was made for (its metrics.json), if recorded."""
    try:
        return json.loads((directory / DISTILL_METRICS).read_text()).get("genome_key")
    except (OSError, ValueError, AttributeError):
        return None


def load_run(run_dir: str | Path, *, model: nn.Module | None = None, train: Any = None, val: Any = None,
             test: Any = None) -> Run:
    """The run in `run_dir` (FileNotFoundError naming the missing file when it is not one).

    A search started in Python (`evoprune.search`) kept its model's weights but neither its class nor its
    data: give `model` (an instance of the class; the run's weights are loaded into a copy) and `train` and
    `val` (and `test`) again, as they were given to the search, for its subnets, distill and export. ValueError for these on a CLI search's run."""
    run = Path(run_dir)
    for name in (CONFIG, TASK, FRONT_JSON):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not an evoprune run directory (no {name})")
    front = json.loads((run / FRONT_JSON).read_text())
    python = json.loads((run / PYTHON_INPUTS).read_text()) if (run / PYTHON_INPUTS).is_file() else None
    given = GivenInputs(model, train, val, test)
    if python is None and any(v is not None for v in (model, train, val, test)):
        raise ValueError(f"{run} is a search of its configured parent and data: load_run takes model, train, val "
                         "and test only for a search started with evoprune.search")
    return Run(run, load_config(run / CONFIG), json.loads((run / TASK).read_text()),
               front["parent"], front["front"], python, given)
