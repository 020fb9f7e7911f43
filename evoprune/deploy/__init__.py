"""After the search: the final distillation, export, prediction with an export, deployment metrics."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "deployment_metrics": "metrics",
    "front_metrics": "metrics",
    "metrics_table": "metrics",
    "distill_model": "distill",
    "run_distill": "distill",
    "check_second_student": "distill",
    "load_exported": "export",
    "check_onnx_available": "export",
    "MissingExtra": "export",
    "ImageClassifier": "predict",
    "image_files": "predict",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
