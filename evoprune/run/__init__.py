"""The run directory: its file names (files.py), the search that writes it, the writer, the reader (Run), the report."""
from evoprune.lazy import lazy_exports

_EXPORTS = {
    "Run": "reader",
    "load_run": "reader",
    "RunDirSearch": "search",
    "RunWriter": "writer",
    "CheckpointError": "writer",
    "front_entries": "writer",
    "distill_dir": "files",
    "WEIGHTS": "files",
    "front_table": "report",
    "write_plots": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
