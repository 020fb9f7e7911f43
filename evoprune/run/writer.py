"""Writing the run directory: config, task, space, evaluations, history, front, checkpoint (atomic)."""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoprune.atomic import remove_temp_files, write_json, write_text
from evoprune.config import save_config
from evoprune.evolve.pareto import front_indices

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness
    from evoprune.evolve.loop import SearchState

CHECKPOINT = "checkpoint.json"
CHECKPOINT_PREV = "checkpoint.prev.json"
FORMAT_VERSION = 1
WEIGHTS = ("finetuned", "pruned", "distilled")  # the weights a front member can be had with (Run.subnet)
DISTILLED_MODEL = "model.pt"  # in distill_dir: `evoprune distill`'s weights of one front member
# What a fresh search writes; a new run in an old run's directory removes these first, so that
# neither a stale checkpoint nor a stale front can be mistaken for the new run's.
FAILED_GENOME = "failed-genome.json"  # the genome a crashed worker was fine-tuning, to reproduce it
RUN_OUTPUTS = (CHECKPOINT, CHECKPOINT_PREV, "front.json", "front.csv", "evaluations.csv", "history.csv",
               "pareto.png", "hypervolume.png", "task.json", "space.json", FAILED_GENOME)
# Everything a search writes in its directory, the cached parent included.
RUN_FILES = RUN_OUTPUTS + ("config.yaml", "parent.pt", "parent.json")


class CheckpointError(RuntimeError):
    """No readable checkpoint in a run directory."""


def distill_dir(run_dir: str | Path, pick: int) -> Path:
    """Where `evoprune distill` writes front member `pick`'s student."""
    return Path(run_dir) / f"distill-{pick}"


def rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(obj: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((obj[0], tuple(obj[1]), obj[2]))
    return rng


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


EVAL_COLUMNS = ["index", "generation", "key", "origin", "accuracy", "n_params", "macs", "size_ratio",
                "params_ratio", "macs_ratio", "kd_loss", "seconds", "status", "widths"]
HISTORY_COLUMNS = ["generation", "evaluations", "new_evaluations", "best_accuracy", "smallest_size_ratio",
                   "front_size", "hypervolume", "elapsed_s"]
FRONT_COLUMNS = ["rank", "key", "origin", "generation", "accuracy", "n_params", "macs", "size_ratio",
                 "params_ratio", "macs_ratio", "compression"]


def front_entries(state: "SearchState") -> list[dict[str, Any]]:
    """The non-dominated evaluated individuals, smallest first, in front.json's public form."""
    records = state.records
    out = []
    for rank, i in enumerate(front_indices([r.objectives for r in records])):
        r, o = records[i], records[i].objectives
        out.append({"rank": rank, "key": r.genome.key(), "origin": r.origin, "generation": r.generation,
                    "genome": r.genome.to_json(), "accuracy": o.accuracy, "n_params": o.n_params,
                    "macs": o.macs, "size_ratio": o.size_ratio, "params_ratio": o.params_ratio,
                    "macs_ratio": o.macs_ratio, "compression": 1.0 / o.size_ratio if o.size_ratio else None})
    return out


class RunWriter:
    """Owns one run directory; every file is replaced atomically so a crash never corrupts it."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    def start(self, fitness: "Fitness") -> None:
        """Begin a fresh run: clear a previous run's outputs (not its cached parent), write the config."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clean()
        for name in RUN_OUTPUTS:  # checkpoints first: a kill in between leaves no checkpoint at all
            (self.dir / name).unlink(missing_ok=True)
        save_config(fitness.cfg, self.dir / "config.yaml")
        write_json(self.dir / "task.json", {**fitness.data.describe(), "parent": fitness.parent_summary(),
                                            "parent_meta": fitness.parent_meta, "evaluator": fitness.evaluator_info})
        write_json(self.dir / "space.json", fitness.space.to_json())

    def write_generation(self, state: "SearchState", fitness: "Fitness") -> None:
        """Tables and front first, the checkpoint last: a checkpoint always has its artifacts."""
        rows = [{"index": r.index, "generation": r.generation, "key": r.genome.key(), "origin": r.origin,
                 **r.objectives.to_json(), "widths": " ".join(str(len(k)) for k in r.genome.values())}
                for r in state.records]
        write_text(self.dir / "evaluations.csv", _csv(rows, EVAL_COLUMNS))
        write_text(self.dir / "history.csv", _csv(state.history, HISTORY_COLUMNS))
        front = front_entries(state)
        write_json(self.dir / "front.json", {"parent": fitness.parent_summary(), "front": front,
                                             "size_metric": fitness.cfg.search.size_metric})
        write_text(self.dir / "front.csv", _csv(front, FRONT_COLUMNS))
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

    def finish(self, state: "SearchState", fitness: "Fitness") -> None:
        from evoprune.run.report import write_plots

        write_plots(self.dir)

    def clean(self) -> list[Path]:
        """Remove temporary files that a killed write left behind."""
        return remove_temp_files(self.dir)

    def has_checkpoint(self) -> bool:
        return any((self.dir / name).is_file() for name in (CHECKPOINT, CHECKPOINT_PREV))

    @staticmethod
    def _parse(text: str) -> "tuple[SearchState, dict[str, Any]] | None":
        try:
            return RunWriter._check(text)
        except ValueError:
            return None

    @staticmethod
    def _check(text: str) -> "tuple[SearchState, dict[str, Any]]":
        """Parse and check a checkpoint fully, so a resume cannot fail half-way; ValueError if damaged."""
        from evoprune.evolve.loop import SearchState

        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            if obj.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown format {obj.get('format')!r}")
            state = SearchState.from_json(obj)
            rng_from_json(state.rng_state)
            keys = {r.genome.key() for r in state.records}
            if any(k not in keys for k in state.population):
                raise ValueError("the population names a genome that is not among the records")
            if len(state.crowding) != len(state.population):
                raise ValueError("crowding does not match the population")
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            raise ValueError(f"{exc.__class__.__name__}: {exc}") from exc
        return state, obj

    def load_checkpoint(self) -> "tuple[SearchState, dict[str, Any], str]":
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

    def read_checkpoint(self) -> "SearchState":
        """The latest readable checkpoint; a damaged one falls back to the previous one (with a warning)."""
        state, _, name = self.load_checkpoint()
        if name == CHECKPOINT_PREV:
            import warnings

            warnings.warn(f"{CHECKPOINT} in {self.dir} is damaged or missing; resuming from {CHECKPOINT_PREV} "
                          f"(generation {state.generation})", stacklevel=2)
        return state
