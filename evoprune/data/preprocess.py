"""From an image file to the model's input, exactly as the training data were prepared.

A `Preprocessing` is plain data (it travels in export.json): the image mode, the size and how images
were resized, the value scaling, the per-channel mean and std of the train split, and the repeat of
grayscale to the channels the model takes. `Preprocessing(...)(image)` turns a PIL image or a file
path into a (1, C, H, W) float tensor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class NotAnImage(ValueError):
    """A file PIL cannot read as an image, or one of a size the model cannot take."""


@dataclass
class Preprocessing:
    """How raw 8-bit images become model inputs: x = (pixel / 255 - mean) / std, per channel."""

    mode: str  # PIL mode the images are converted to: "L" (grayscale) or "RGB"
    size: list[int]  # [H, W] the model takes
    resize: str | None  # None: images must have `size` already; "square": resized to it (bilinear,
    #                     antialiased); "shorter_side_crop": shorter side to H, then centre-cropped
    mean: list[float]  # per channel of the data (1 for grayscale), on values in [0, 1]
    std: list[float]
    channels: int  # channels the model takes: grayscale is repeated to 3 for torchvision models
    class_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "scale": "pixel / 255", "formula": "(pixel / 255 - mean) / std"}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Preprocessing":
        return cls(obj["mode"], list(obj["size"]), obj["resize"], list(obj["mean"]), list(obj["std"]),
                   int(obj["channels"]), list(obj.get("class_names") or []))

    def array(self, image: Any) -> np.ndarray:
        """A PIL image (or a path to one) as float32 (C, H, W) in [0, 1], resized as the training data were."""
        from PIL import Image, UnidentifiedImageError

        if not isinstance(image, Image.Image):
            path = Path(image)
            try:
                with Image.open(path) as im:
                    return self.array(im.copy())
            except (UnidentifiedImageError, OSError) as exc:
                reason = "no such file" if isinstance(exc, FileNotFoundError) else "not an image file PIL can read"
                raise NotAnImage(f"{path}: {reason}") from None
        im = image.convert(self.mode)
        h, w = self.size
        if self.resize == "square" and im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR, reducing_gap=None)
        elif self.resize == "shorter_side_crop":
            scale = h / min(im.size)
            im = im.resize((max(h, round(im.size[0] * scale)), max(h, round(im.size[1] * scale))), Image.BILINEAR)
            left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
            im = im.crop((left, top, left + w, top + h))
        if im.size != (w, h):
            where = getattr(image, "filename", "") or "the image"
            raise NotAnImage(f"{where}: {im.size[0]}x{im.size[1]} pixels, but the model takes {w}x{h} "
                             f"(it was trained at the data's own size; resize the image to {w}x{h})")
        a = np.asarray(im, dtype=np.float32) / 255.0
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def __call__(self, image: Any) -> Any:
        """The model's input for one image (PIL image or path): a (1, C, H, W) float tensor."""
        import torch

        a = self.array(image)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        x = torch.from_numpy(np.ascontiguousarray((a - mean) / std))[None]
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1).contiguous()
        return x
