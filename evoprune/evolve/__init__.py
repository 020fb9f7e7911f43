"""The evolutionary search: the generation loop, its callbacks and state, population, variation, Pareto front."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "Search": "loop",
    "SearchCallback": "callbacks",
    "Record": "state",
    "SearchState": "state",
    "rng_from_json": "state",
    "rng_to_json": "state",
    "front_indices": "pareto",
    "hypervolume": "pareto",
    "initial_population": "population",
    "crossover": "variation",
    "mutate": "variation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
