"""The weights a front member can be had with (Run.subnet, `--weights`): names only, no torch."""

WEIGHTS = ("finetuned", "pruned", "distilled")
DEFAULT_WEIGHTS = "finetuned"  # the short KD fine-tune the search ran, whose accuracy front.json shows
