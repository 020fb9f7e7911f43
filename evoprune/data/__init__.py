"""Data: sources (digits, torchvision datasets, image folders), splits, preprocessing."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "task": ("TaskData", "load_data", "load_task", "augment_batch", "augment_policy", "split_seed"),
    "sources": ("DatasetUnavailable", "Source"),
    "preprocess": ("Preprocessing", "NotAnImage", "IMAGE_SUFFIXES"),
})
