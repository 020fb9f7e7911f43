"""After the search: the final distillation, export, deployment metrics."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "deployment_metrics": "metrics",
    "front_metrics": "metrics",
    "metrics_table": "metrics",
    "distill_model": "distill",
    "run_distill": "distill",
    "export": "export",
    "load_exported": "export",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
