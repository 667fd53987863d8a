"""Image datasets of the paper by name: CIFAR-10/100, SVHN, 80M Tiny Images and its 300K subset
(Outlier Exposure), Tiny-ImageNet 32x32, RestrictedImageNet, ImageNetOD, uniform noise and any
image folder (`get_dataset`).

Every dataset returns `(image, label)` with an int label. With `transform=None` the image is a
float tensor (3, H, W) in [0, 1]; otherwise the transform receives an RGB PIL image. `n > 0` keeps
the first n items (deterministic), `n = 0` keeps all. Every dataset has a `provenance` string
saying which files it was read from and whether they are lossless (`describe` gives the same
string without reading the data); records and reports carry it, since a JPEG copy shifts FID.

`root` is one data folder, a list searched in order, or None: $DUALAT_DATA, then data/raw/
(paths.data_roots). A missing source raises DataMissingError; data that is there but wrong (a
damaged shard, labels out of range, more images asked for than there are) raises DataError
naming the file and the remedy (shards.py, validate.py).

The loaders live by source family: cifar_svhn.py (torchvision formats and CIFAR-10 shards),
tiny.py (80M Tiny Images, Tiny-ImageNet), imagenet.py (RestrictedImageNet, ImageNetOD); the file
names and `describe` in catalog.py, downloads in download.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dualat.data.catalog import DATASETS, DOWNLOADABLE, describe, folder_text, noise_text
from dualat.data.cifar_svhn import CIFAR10_CLASSES, cifar, svhn
from dualat.data.imagenet import RIN_CLASSES, RIN_RANGES, imagenet_od, restricted_imagenet, rin_label
from dualat.data.images import ArrayImages, FileImages, Transform, to_sample
from dualat.data.paths import DataMissingError, PathLike, Roots, data_roots
from dualat.data.tiny import TinyImages, tiny_images, tiny_images_300k, tinyimagenet32
from dualat.data.validate import TooFewImages, first_n

__all__ = [  # the public names of the dataset modules, re-exported here and by dualat.data
    "CIFAR10_CLASSES",
    "DATASETS",
    "DOWNLOADABLE",
    "RIN_CLASSES",
    "RIN_RANGES",
    "ArrayImages",
    "FileImages",
    "TinyImages",
    "UniformNoise",
    "cifar",
    "describe",
    "get_dataset",
    "image_folder",
    "imagenet_od",
    "restricted_imagenet",
    "rin_label",
    "svhn",
    "tiny_images",
    "tiny_images_300k",
    "tinyimagenet32",
    "uniform_noise",
]


class UniformNoise(Dataset):
    """n images of i.i.d. uniform noise on the 256 uint8 levels of [0, 1], generated from
    seed + index (so item i never depends on which items were read before). Label 0."""

    def __init__(self, n: int, size: int = 32, seed: int = 0, transform: Transform | None = None):
        if n <= 0:
            raise ValueError(f"uniform_noise needs n > 0, got {n}")
        self.n, self.size, self.seed, self.transform = n, size, seed, transform
        self.image_hw, self.source = (size, size), "uniform noise"
        self.provenance = noise_text(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        g = torch.Generator().manual_seed(self.seed + i)
        img = torch.randint(0, 256, (self.size, self.size, 3), dtype=torch.uint8, generator=g)
        return to_sample(img.numpy(), self.transform), 0


def uniform_noise(n: int, size: int = 32, seed: int = 0, transform: Transform | None = None) -> UniformNoise:
    """Uniform-noise OOD set: n images (3, size, size) in [0, 1], deterministic per index."""
    return UniformNoise(n, size, seed, transform)


def image_folder(root: PathLike | None, transform: Transform | None = None, n: int = 0) -> Dataset:
    """torchvision ImageFolder of `root` (class sub-folders of images); images in [0, 1] as
    (3, H, W) float tensors when `transform` is None."""
    folder = data_roots(root)[0]
    how = f"point root at a folder of class sub-folders holding images ({folder} has none)"
    try:
        from torchvision.datasets import ImageFolder  # lazy: ~1.3 s to import, needless without data
        from torchvision.transforms import ToTensor

        ds = ImageFolder(str(folder), transform=transform or ToTensor())
    except FileNotFoundError as err:
        raise DataMissingError("image folder", [folder], f"{how}: {err}") from err
    keep = first_n(n, len(ds), "folder")
    ds.samples = ds.imgs = ds.samples[:keep]
    ds.targets = ds.targets[:keep]
    ds.provenance = folder_text(folder)
    return ds


def get_dataset(
    name: str,
    split: str = "train",
    root: Roots = None,
    transform: Transform | None = None,
    n: int = 0,
    n_key: str = "n",
    **kw: Any,
) -> Dataset:
    """Dataset by name (one of DATASETS); `split` is ignored by tiny_images(_300k), noise and folder.

    `n_key` names `n` in the error when n exceeds the dataset (the config key, e.g. "data.n_train").
    Extra keywords go to the builder: download (cifar*, svhn), exclude_files/index_base
    (tiny_images), balance (rin), size/seed (noise).
    """
    try:
        return _build(name, split, root, transform, n, **kw)
    except TooFewImages as err:
        raise err.with_key(n_key) from None


def _build(name: str, split: str, root: Roots, transform: Transform | None, n: int, **kw: Any) -> Dataset:
    builders: dict[str, Callable[[], Dataset]] = {
        "cifar10": lambda: cifar(name, split, root, transform, n, **kw),
        "cifar100": lambda: cifar(name, split, root, transform, n, **kw),
        "svhn": lambda: svhn(split, root, transform, n, **kw),
        "tiny_images": lambda: tiny_images(root, n=n, transform=transform, **kw),
        "tiny_images_300k": lambda: tiny_images_300k(root, transform, n),
        "tinyimagenet32": lambda: tinyimagenet32(split, root, transform, n, **kw),
        "rin": lambda: restricted_imagenet(split, root, transform, n=n, **kw),
        "imagenet_od": lambda: imagenet_od(split, root, transform, n, **kw),
        "noise": lambda: uniform_noise(n, transform=transform, **kw),
        "folder": lambda: image_folder(_first(root), transform, n, **kw),
    }
    if name not in builders:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    return builders[name]()


def _first(root: Roots) -> Path:
    """The image folder of "folder": the first of data_roots(root)."""
    return data_roots(root)[0]
