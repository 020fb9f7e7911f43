"""The evolutionary search: the generation loop, its callbacks and state, population, variation, Pareto front."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "loop": ("Search",),
    "callbacks": ("SearchCallback",),
    "state": ("Record", "SearchState", "rng_from_json", "rng_to_json"),
    "pareto": ("front_indices", "hypervolume"),
    "population": ("initial_population",),
    "variation": ("crossover", "mutate"),
})
