"""The run directory: its file names, the writer, the reader (Run) and the report."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "Run": "reader",
    "load_run": "reader",
    "RunWriter": "writer",
    "CheckpointError": "writer",
    "front_table": "report",
    "write_plots": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
