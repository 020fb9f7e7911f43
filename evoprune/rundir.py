"""Writing the run directory: config, task, space, evaluations, history, front, checkpoint (atomic)."""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import write_json, write_text
from .config import save_config
from .pareto import front_indices

if TYPE_CHECKING:
    from .fitness import Fitness
    from .search import SearchState

CHECKPOINT = "checkpoint.json"
CHECKPOINT_PREV = "checkpoint.prev.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """No readable checkpoint in a run directory."""


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
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(fitness.cfg, self.dir / "config.yaml")
        write_json(self.dir / "task.json", {**fitness.data.describe(), "parent": fitness.parent_summary(),
                                            "parent_meta": fitness.parent_meta})
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
            write_text(self.dir / CHECKPOINT_PREV, ckpt.read_text())
        write_json(ckpt, {"format": FORMAT_VERSION, **state.to_json()})

    def finish(self, state: "SearchState", fitness: "Fitness") -> None:
        from .report import write_plots

        write_plots(self.dir)

    def read_checkpoint(self) -> "SearchState":
        """The latest readable checkpoint; a damaged one falls back to the previous one."""
        from .search import SearchState

        errors = []
        for name in (CHECKPOINT, CHECKPOINT_PREV):
            path = self.dir / name
            if not path.is_file():
                errors.append(f"{name}: missing")
                continue
            try:
                obj = json.loads(path.read_text())
                if obj.get("format") != FORMAT_VERSION:
                    raise ValueError(f"unknown format {obj.get('format')!r}")
                state = SearchState.from_json(obj)
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(f"{name}: unreadable ({exc.__class__.__name__}: {str(exc)[:80]})")
                continue
            if name == CHECKPOINT_PREV:
                import warnings

                warnings.warn(f"{CHECKPOINT} in {self.dir} is damaged; resuming from {CHECKPOINT_PREV}")
            return state
        raise CheckpointError(f"no usable checkpoint in {self.dir}: {'; '.join(errors)}")
