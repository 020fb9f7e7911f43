"""The run directory: its file names (files.py), the search that writes it, the writer, the reader (Run), the report."""
from evoprune.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "reader": ("Run", "load_run"),
    "search": ("RunDirSearch",),
    "writer": ("RunWriter", "CheckpointError", "front_entries"),
    "files": ("distill_dir", "WEIGHTS"),
    "report": ("front_table", "write_plots"),
})
