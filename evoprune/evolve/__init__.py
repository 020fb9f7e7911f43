"""The evolutionary search: the generation loop, its state, population, variation, Pareto front."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "Search": "loop",
    "Record": "loop",
    "SearchState": "loop",
    "front_indices": "pareto",
    "hypervolume": "pareto",
    "initial_population": "population",
    "crossover": "variation",
    "mutate": "variation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
