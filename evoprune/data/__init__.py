"""Data: sources (digits, torchvision datasets, image folders), splits, preprocessing."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "TaskData": "task",
    "load_data": "task",
    "load_task": "task",
    "DatasetUnavailable": "sources",
    "Source": "sources",
    "augment_batch": "task",
    "augment_policy": "task",
    "split_seed": "task",
    "Preprocessing": "preprocess",
    "NotAnImage": "preprocess",
    "IMAGE_SUFFIXES": "preprocess",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
