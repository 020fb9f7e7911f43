"""Writing the run directory: config, task, space, evaluations, history, front, checkpoint (atomic)."""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoprune.atomic import remove_temp_files, write_json, write_text
from evoprune.config import ConfigError, apply_overrides, config_from_dict, save_config
from evoprune.evolve.callbacks import SearchCallback
from evoprune.evolve.state import SearchState
from evoprune.run.files import (CHECKPOINT, CHECKPOINT_PREV, CONFIG, EVALUATIONS, FRONT_CSV, FRONT_JSON, HISTORY,
                                RUN_OUTPUTS, SPACE, TASK)

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness

FORMAT_VERSION = 1
# What a resume may set anew (its budget).
RESUME_OVERRIDABLE = ("search.generations", "search.max_evaluations", "search.patience", "search.min_gain")
# May differ between config.yaml and a checkpoint: the resume budget, and `evaluator.kind`, which a
# resume replaces by the evaluator the run actually used (see pin_evaluator).
RESUME_MAY_DIFFER = RESUME_OVERRIDABLE + ("evaluator.kind",)


class CheckpointError(RuntimeError):
    """No readable checkpoint in a run directory."""


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


EVAL_COLUMNS = ["index", "generation", "key", "origin", "accuracy", "n_params", "macs", "size_ratio",
                "params_ratio", "macs_ratio", "kd_loss", "seconds", "status", "accuracy_before",
                "accuracy_after", "widths"]
HISTORY_COLUMNS = ["generation", "evaluations", "new_evaluations", "best_accuracy", "smallest_size_ratio",
                   "front_size", "hypervolume", "regressed", "elapsed_s"]
FRONT_COLUMNS = ["rank", "key", "origin", "generation", "accuracy", "n_params", "macs", "size_ratio",
                 "params_ratio", "macs_ratio", "compression"]


def front_entries(state: SearchState) -> list[dict[str, Any]]:
    """The non-dominated evaluated individuals, smallest first, in front.json's public form."""
    out = []
    for rank, r in enumerate(state.front()):
        o = r.objectives
        out.append({"rank": rank, "key": r.genome.key(), "origin": r.origin, "generation": r.generation,
                    "genome": r.genome.to_json(), "accuracy": o.accuracy, "n_params": o.n_params,
                    "macs": o.macs, "size_ratio": o.size_ratio, "params_ratio": o.params_ratio,
                    "macs_ratio": o.macs_ratio, "compression": 1.0 / o.size_ratio if o.size_ratio else None})
    return out


class RunWriter(SearchCallback):
    """Owns one run directory; every file is replaced atomically so a crash never corrupts it.

    As a search's callback it starts the directory (fresh searches only), writes every generation and
    draws the plots at the end; `read_checkpoint` gives the state to resume from."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    def start(self, fitness: "Fitness") -> None:
        """Begin a fresh run: clear a previous run's outputs (not its cached parent), write the config."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clean()
        for name in RUN_OUTPUTS:  # checkpoints first: a kill in between leaves no checkpoint at all
            (self.dir / name).unlink(missing_ok=True)
        save_config(fitness.cfg, self.dir / CONFIG)
        write_json(self.dir / TASK, {**fitness.data.describe(), "parent": fitness.parent_summary(),
                                            "parent_meta": fitness.parent_meta, "evaluator": fitness.evaluator_info})
        write_json(self.dir / SPACE, fitness.space.to_json())

    def write_generation(self, state: SearchState, fitness: "Fitness") -> None:
        """Tables and front first, the checkpoint last: a checkpoint always has its artifacts."""
        rows = [{"index": r.index, "generation": r.generation, "key": r.genome.key(), "origin": r.origin,
                 **r.objectives.to_json(), "widths": " ".join(str(len(k)) for k in r.genome.values())}
                for r in state.records]
        write_text(self.dir / EVALUATIONS, _csv(rows, EVAL_COLUMNS))
        write_text(self.dir / HISTORY, _csv(state.history, HISTORY_COLUMNS))
        front = front_entries(state)
        write_json(self.dir / FRONT_JSON, {"parent": fitness.parent_summary(), "front": front,
                                           "size_metric": fitness.cfg.search.size_metric})
        write_text(self.dir / FRONT_CSV, _csv(front, FRONT_COLUMNS))
        ckpt = self.dir / CHECKPOINT
        if ckpt.is_file():  # keep the previous good checkpoint in case the new one is damaged later
            try:
                text: str | None = ckpt.read_text()
            except (OSError, ValueError):
                text = None
            if text is not None and self._parse(text) is not None:  # never replace a good fallback with junk
                write_text(self.dir / CHECKPOINT_PREV, text)
        # The config and the evaluator this run really used: a resume checks the one and reuses the other.
        evaluator = fitness.evaluator.kind
        write_json(ckpt, {"format": FORMAT_VERSION, "config": fitness.cfg.to_dict(), "evaluator": evaluator,
                          **state.to_json()})

    def write_plots(self) -> None:
        """pareto.png and hypervolume.png, drawn from the front and history files written last."""
        from evoprune.run.report import write_plots

        write_plots(self.dir)

    # -- as the search's callback ----------------------------------------------------------------
    def on_start(self, state: SearchState, fitness: "Fitness") -> None:
        """A fresh search (no generation yet) starts the directory; a resumed one continues in it."""
        if state.generation < 0:
            self.start(fitness)

    def on_generation(self, state: SearchState, fitness: "Fitness") -> None:
        self.write_generation(state, fitness)

    def on_finish(self, state: SearchState, fitness: "Fitness") -> None:
        """The final state's front and history are on disk since its last generation: draw the plots."""
        self.write_plots()

    def clean(self) -> list[Path]:
        """Remove temporary files that a killed write left behind."""
        return remove_temp_files(self.dir)

    def has_checkpoint(self) -> bool:
        return any((self.dir / name).is_file() for name in (CHECKPOINT, CHECKPOINT_PREV))

    @staticmethod
    def _parse(text: str) -> tuple[SearchState, dict[str, Any]] | None:
        try:
            return RunWriter._check(text)
        except ValueError:
            return None

    @staticmethod
    def _check(text: str) -> tuple[SearchState, dict[str, Any]]:
        """Parse and check a checkpoint fully, so a resume cannot fail half-way; ValueError if damaged."""
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            if obj.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown format {obj.get('format')!r}")
            state = SearchState.from_json(obj)
            state.check_consistent()
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            raise ValueError(f"{exc.__class__.__name__}: {exc}") from exc
        return state, obj

    def load_checkpoint(self) -> tuple[SearchState, dict[str, Any], str]:
        """(state, the checkpoint document, its file name) of the newest usable checkpoint.

        A damaged or missing checkpoint.json falls back to checkpoint.prev.json; CheckpointError
        (one line, naming each file's problem) when neither is usable.
        """
        errors = []
        for name in (CHECKPOINT, CHECKPOINT_PREV):
            path = self.dir / name
            if not path.is_file():
                errors.append(f"{name}: missing")
                continue
            try:
                state, obj = self._check(path.read_text())
            except (OSError, ValueError) as exc:
                detail = " ".join(str(exc).split())[:80]
                errors.append(f"{name}: unreadable ({exc.__class__.__name__}: {detail})")
                continue
            return state, obj, name
        raise CheckpointError(f"no usable checkpoint in {self.dir}: {'; '.join(errors)}")

    def read_checkpoint(self) -> SearchState:
        """The latest readable checkpoint; a damaged one falls back to the previous one (with a warning)."""
        state, _, name = self.load_checkpoint()
        if name == CHECKPOINT_PREV:
            warnings.warn(f"{CHECKPOINT} in {self.dir} is damaged or missing; resuming from {CHECKPOINT_PREV} "
                          f"(generation {state.generation})", stacklevel=2)
        return state


def pin_evaluator(cfg: Any, used: Any) -> Any:
    """The config with the evaluator the checkpointed run used, if recorded.

    The batched and sequential evaluators agree only to float rounding, so a resume that chose
    differently from the run it continues (`evaluator.kind: auto` decides by the device, and the
    rule may change between versions) would not continue it exactly. The recorded kind is reused.
    """
    section = getattr(cfg, "evaluator", None)
    if not isinstance(used, str) or section is None or getattr(section, "kind", None) == used:
        return cfg
    try:
        return config_from_dict(apply_overrides(cfg.to_dict(), [f"evaluator.kind={used}"]))
    except ConfigError:  # an evaluator this version does not know: let the config decide
        return cfg


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def resume_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The config keys (dotted) that differ between a checkpoint's config and the one a resume brings,
    other than those a resume may change: a resume must continue the very run."""
    now_flat, then = flatten(now), flatten(saved)
    return [k for k in then if k in now_flat and k not in RESUME_MAY_DIFFER and now_flat[k] != then[k]]
