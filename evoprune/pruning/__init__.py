"""Pruning: DependencyGraph groups, importance rankings, the SearchSpace, genome -> pruned subnet."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "SearchSpace": "space",
    "GroupSpec": "space",
    "build_space": "importance",
    "materialise": "materialise",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
