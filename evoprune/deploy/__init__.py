"""After the search: the final distillation, export, prediction with an export, deployment metrics."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "metrics": ("deployment_metrics", "front_metrics", "metrics_table"),
    "distill": ("distill_model", "run_distill", "check_second_student"),
    "export": ("load_exported", "check_onnx_available", "MissingExtra"),
    "predict": ("ImageClassifier", "image_files"),
})
