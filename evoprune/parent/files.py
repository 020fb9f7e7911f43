"""The parent cache's file names (a run directory or a `train-parent` directory holds them): no torch."""

PARENT_WEIGHTS = "parent.pt"  # the parent's state_dict
PARENT_META = "parent.json"  # how it was made: architecture, data split, epochs, validation accuracy
PARENT_FILES = (PARENT_WEIGHTS, PARENT_META)
