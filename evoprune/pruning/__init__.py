"""Pruning: DependencyGraph groups, importance rankings, the SearchSpace, genome -> pruned subnet."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "space": ("SearchSpace", "GroupSpec"),
    "importance": ("build_space",),
    "materialise": ("materialise",),
    "groups": ("use_custom_layers",),
    "probe": ("prune_problem",),
})
