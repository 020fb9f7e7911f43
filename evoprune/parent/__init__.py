"""The parent network: architectures by name, training (transfer learning), loading, caching."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "models": ("build_model", "classifier_of", "replace_classifier", "WeightsUnavailable"),
    "train": ("build_parent", "get_parent", "train_parent", "train_parent_into"),
    "files": ("PARENT_WEIGHTS", "PARENT_META"),
})
