"""Objectives: what one fitness evaluation measures (plain data, directions declared once)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

# The search's objectives and their directions: +1 maximise, -1 minimise. DEAP weights come from here.
PARETO_OBJECTIVES = (("accuracy", 1.0), ("size_ratio", -1.0))


@dataclass(frozen=True)
class Objectives:
    accuracy: float  # top-1 on the held-out validation split, in [0, 1]
    n_params: int
    macs: int  # multiply-accumulates of one forward at the task's input size
    size_ratio: float  # size (params or MACs, per search.size_metric) relative to the parent
    params_ratio: float
    macs_ratio: float
    kd_loss: float  # mean KD loss over the last fine-tune steps (nan when no steps ran)
    seconds: float  # wall time of this evaluation
    # "ok"; "regressed": the fine-tune ended below the subnet's own score before it (after adaptive BN);
    # "nonfinite": the fine-tune diverged (then worst accuracy)
    status: str = "ok"
    accuracy_before: float | None = None  # the score before the fine-tune, after adaptive BN (None: not measured)
    accuracy_after: float | None = None  # the score after it (None: no fine-tune ran, or it diverged)

    @property
    def valid(self) -> bool:
        """A usable measurement (a non-finite fine-tune is not)."""
        return self.status != "nonfinite"

    def values(self, mode: str, scalar_lambda: float = 0.0) -> tuple[float, ...]:
        """The values the search optimises: (accuracy, size_ratio), or accuracy - lambda*size."""
        if mode == "scalar":
            return (self.accuracy - scalar_lambda * self.size_ratio,)
        return tuple(getattr(self, name) for name, _ in PARETO_OBJECTIVES)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["kd_loss"] = None if math.isnan(self.kd_loss) else self.kd_loss
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Objectives":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in obj.items() if k in known}
        kw["kd_loss"] = float("nan") if kw.get("kd_loss") is None else float(kw["kd_loss"])
        return cls(**kw)
