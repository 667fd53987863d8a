"""The two dataset classes every loader returns: images held in memory (ArrayImages) and images
read from files on access (FileImages), and how an image becomes a sample.

A sample is `(image, label)` with an int label. With `transform=None` the image is a float
tensor (3, H, W) in [0, 1]; otherwise the transform receives an RGB PIL image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dualat.data.catalog import shards_text
from dualat.data.shards import cached_shards
from dualat.data.validate import NUM_CLASSES, check_arrays, first_n

Transform = Callable[[Any], Any]


def check_choice(param: str, value: str, allowed: Sequence[str]) -> None:
    """ValueError naming `param` unless value is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{param} must be one of {tuple(allowed)}, got {value!r}")


def to_sample(img: np.ndarray | Image.Image, transform: Transform | None) -> Any:
    """(H, W, 3) uint8 array or PIL image -> transform(PIL) or a float tensor (3, H, W) in [0, 1]."""
    if transform is not None:
        pil = img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
        return transform(pil.convert("RGB"))
    if isinstance(img, Image.Image):
        img = img.convert("RGB")
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W), a copy
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


def read_rgb(path: str | Path) -> Image.Image:
    """An image file as an RGB PIL image (what torchvision's default PIL loader does)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class ArrayImages(Dataset):
    """In-memory images `x` (N, H, W, 3) uint8 with labels `y` (N,) int64; `source` names where
    they came from (in error messages), `provenance` describes them (default: `source`),
    `image_hw` is their (H, W)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
        source: str = "arrays",
        provenance: str = "",
    ) -> None:
        check_arrays(source, x, np.asarray(y))
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        self.transform = transform
        self.classes = None if classes is None else list(classes)
        self.source = source
        self.provenance = provenance or source

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.x.shape[1], self.x.shape[2]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return to_sample(self.x[i], self.transform), int(self.y[i])


class FileImages(Dataset):
    """Images read from files on access: `samples` is a list of (path, label). With `size`, each
    image is box-downsampled to size x size on reading and `image_hw` is (size, size)."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Transform | None = None,
        classes: Sequence[str] = (),
        provenance: str = "image files",
        size: int | None = None,
    ) -> None:
        self.samples, self.transform, self.classes = samples, transform, list(classes)
        self.provenance, self.size = provenance, size
        self.targets = [label for _, label in samples]
        self.sample_weights: torch.Tensor | None = None
        if size is not None:
            self.image_hw, self.source = (size, size), str(Path(samples[0][0]).parent) if samples else ""

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        img = read_rgb(path)
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BOX)  # a 2x2 mean for 64 -> 32
        return to_sample(img, self.transform), label


def from_shards(
    name: str, split: str, files: list[Path], transform: Transform | None, n: int, classes: Sequence[str] | None = None
) -> ArrayImages:
    """The first n images of the (checked, cached) shards `files` of dataset `name`."""
    x, y, extra = cached_shards(files, n, NUM_CLASSES[name], name)
    keep = first_n(n, len(x), f"{name} {split}")
    if "wnids" in extra:
        classes = [str(w) for w in extra["wnids"]]
    return ArrayImages(x[:keep], y[:keep], transform, classes, source=str(files[0]), provenance=shards_text(files))
