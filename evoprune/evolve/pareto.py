"""Pareto front and hypervolume of (accuracy max, size ratio min), via moocore (DEAP's backend)."""
from __future__ import annotations

from typing import Sequence

import moocore
import numpy as np

from evoprune.objectives import PARETO_OBJECTIVES, Objectives

HV_REFERENCE = (0.0, 1.0)  # accuracy 0, size ratio 1 (the parent's size)
_MAXIMISE = [sign > 0 for _, sign in PARETO_OBJECTIVES]


def _points(objs: Sequence[Objectives]) -> np.ndarray:
    return np.array([o.values("pareto") for o in objs], dtype=float).reshape(-1, len(PARETO_OBJECTIVES))


def front_indices(objs: Sequence[Objectives]) -> list[int]:
    """Indices of the non-dominated objectives (one of each set of equal points), by size ratio."""
    ok = [i for i, o in enumerate(objs) if o.valid]
    if not ok:
        return []
    mask = moocore.is_nondominated(_points([objs[i] for i in ok]), maximise=_MAXIMISE, keep_weakly=False)
    chosen = [i for i, m in zip(ok, mask) if m]
    return sorted(chosen, key=lambda i: (objs[i].size_ratio, -objs[i].accuracy))


def hypervolume(objs: Sequence[Objectives], ref: tuple[float, float] = HV_REFERENCE) -> float:
    """Area dominated by the points within the reference box [0, acc] x [size, 1]."""
    pts = _points([o for o in objs if o.valid and o.size_ratio < ref[1] and o.accuracy > ref[0]])
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=list(ref), maximise=_MAXIMISE))
