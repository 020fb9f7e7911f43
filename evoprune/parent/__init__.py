"""The parent network: architectures by name, training (transfer learning), loading, caching."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "build_model": "models",
    "classifier_of": "models",
    "replace_classifier": "models",
    "WeightsUnavailable": "models",
    "build_parent": "train",
    "get_parent": "train",
    "train_parent": "train",
    "train_parent_into": "train",
    "PARENT_WEIGHTS": "files",
    "PARENT_META": "files",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
