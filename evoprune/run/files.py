"""Every file name of a run directory, defined once (the parent's cache files are parent/'s format); no torch."""
from __future__ import annotations

from pathlib import Path

from evoprune.parent.files import PARENT_META, PARENT_WEIGHTS

CONFIG = "config.yaml"  # the resolved config the run was started with (a resume's budget overrides included)
TASK = "task.json"  # the data, the parent's summary and metadata, the evaluator
SPACE = "space.json"  # the search space (prunable groups)
CHECKPOINT = "checkpoint.json"  # format version, config, evaluator and the SearchState, after each generation
CHECKPOINT_PREV = "checkpoint.prev.json"  # the previous good checkpoint, in case the newest is damaged
FRONT_JSON = "front.json"  # the parent and the Pareto front, smallest first (the `--pick` numbering)
FRONT_CSV = "front.csv"
EVALUATIONS = "evaluations.csv"  # every evaluated individual
HISTORY = "history.csv"  # one row per generation
PARETO_PLOT = "pareto.png"
HYPERVOLUME_PLOT = "hypervolume.png"
FAILED_GENOME = "failed-genome.json"  # the genome a crashed worker was fine-tuning, to reproduce it
METRICS_JSON = "metrics.json"  # `report --metrics`: deployment metrics of the parent and front members
METRICS_PLOT = "metrics.png"
# A search started in Python (`evoprune.search`) on the user's own model and data objects:
PYTHON_INPUTS = "python_inputs.json"  # what was given (the model's class, whether a test split was)

# The weights a front member can be had with (Run.subnet, `--weights`).
WEIGHTS = ("finetuned", "pruned", "distilled")
DEFAULT_WEIGHTS = "finetuned"  # the short KD fine-tune the search ran, whose accuracy front.json shows

# In distill_dir(run_dir, pick): what `evoprune distill` writes for one front member.
DISTILLED_MODEL = "model.pt"  # the student's weights (Run.subnet(pick, "distilled"))
DISTILLED_SECOND_MODEL = "model2.pt"  # deep mutual learning: the second student's
DISTILL_METRICS = "metrics.json"
DISTILL_CURVE = "curve.png"  # train loss and validation accuracy per epoch
# In student_dir(run_dir, arch, kd): what `evoprune distill --student ARCH` writes.
STUDENT_LABELS_MODEL = "model-labels-only.pt"  # the same student trained without the teacher
SPECIALISTS = "specialists"  # `evoprune specialists`: specialist-i.pt and metrics.json

# What a fresh search writes; a new run in an old run's directory removes these first, so that
# neither a stale checkpoint nor a stale front can be mistaken for the new run's.
RUN_OUTPUTS = (CHECKPOINT, CHECKPOINT_PREV, FRONT_JSON, FRONT_CSV, EVALUATIONS, HISTORY, PARETO_PLOT,
               HYPERVOLUME_PLOT, TASK, SPACE, FAILED_GENOME, PYTHON_INPUTS)
# Everything a search writes in its directory, the cached parent included.
RUN_FILES = RUN_OUTPUTS + (CONFIG, PARENT_WEIGHTS, PARENT_META)
# Any of these makes a directory an evoprune run (possibly one that stopped before its first generation).
RUN_MARKERS = (CONFIG, CHECKPOINT, CHECKPOINT_PREV, PARENT_META)

__all__ = ["CHECKPOINT", "CHECKPOINT_PREV", "CONFIG", "DEFAULT_WEIGHTS", "WEIGHTS", "DISTILLED_MODEL", "DISTILLED_SECOND_MODEL", "DISTILL_CURVE",
           "DISTILL_METRICS", "EVALUATIONS", "FAILED_GENOME", "FRONT_CSV", "FRONT_JSON", "HISTORY", "HYPERVOLUME_PLOT",
           "METRICS_JSON", "METRICS_PLOT", "PARENT_META", "PYTHON_INPUTS", "PARENT_WEIGHTS", "PARETO_PLOT", "RUN_FILES", "RUN_MARKERS",
           "RUN_OUTPUTS", "SPACE", "SPECIALISTS", "STUDENT_LABELS_MODEL", "TASK", "distill_dir", "student_dir"]


def distill_dir(run_dir: str | Path, pick: int) -> Path:
    """Where `evoprune distill` writes front member `pick`'s student."""
    return Path(run_dir) / f"distill-{pick}"


def student_dir(run_dir: str | Path, arch: str, kd: str) -> Path:
    """Where `evoprune distill --student ARCH` with KD loss `kd` writes (an import path's ':' and '.' become
    '-'), so that the losses can be compared side by side."""
    return Path(run_dir) / f"student-{arch.replace(':', '-').replace('.', '-')}-{kd}"
