"""Classify image files with an exported subnet: the model, its preprocessing and its class names."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evoprune.data.preprocess import IMAGE_SUFFIXES
from evoprune.deploy.export import EXPORT, load_exported


def image_files(paths: list[str | Path]) -> list[Path]:
    """The files named, and the image files inside the folders named (recursively, sorted);
    FileNotFoundError for a path that is neither, or a folder without image files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


class NoPreprocessing(ValueError):
    """An export made before evoprune recorded how its inputs are prepared."""


class ImageClassifier:
    """An `evoprune export` directory's model with the preprocessing of its training data."""

    def __init__(self, export_dir: str | Path):
        d = Path(export_dir)
        self.model = load_exported(d)
        self.preprocess = getattr(self.model, "preprocess", None)
        if self.preprocess is None:
            raise NoPreprocessing(f"{d}/{EXPORT} holds no preprocessing: its data were given as tensors "
                                  "(data.factory, evoprune.search), which evoprune did not prepare from image files, "
                                  "or it was exported before evoprune recorded it (export it again)")
        meta = json.loads((d / EXPORT).read_text())
        n_classes = meta["n_classes"]
        self.class_names = self.preprocess.class_names or [str(c) for c in range(n_classes)]
        self.multilabel = meta.get("task") == "multilabel"

    def top_classes(self, image: str | Path, k: int) -> list[tuple[str, float]]:
        """The `k` most likely classes of an image file (NotAnImage if it is none) with their probabilities; for
        multi-label data the `k` most likely attributes, each with its own probability (sigmoid)."""
        x = self.preprocess(image)
        with torch.inference_mode():
            logits = self.model(x).float()
            probs = (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1))[0]
        top = torch.topk(probs, min(k, len(self.class_names)))
        return [(self.class_names[int(c)], float(p)) for p, c in zip(top.values, top.indices)]
