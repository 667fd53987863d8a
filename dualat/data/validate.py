"""Checks that data matches what the config and the dataset promise, so that wrong data fails fast
instead of training: label range, image size, class count, number of images.

Every check raises DataError (a ValueError) naming the file or the config key at fault and what
to do about it. The image-size check reads array shapes only, never decodes an image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dualat.data.paths import DataError

# Number of classes of each labelled dataset (SVHN after its label 10 -> 0 mapping).
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "tinyimagenet32": 200, "rin": 9}


class TooFewImages(DataError):
    """More images asked for (`n`, set by the config key `key`) than the dataset holds."""

    def __init__(self, n: int, length: int, what: str, key: str = "n") -> None:
        self.n, self.length, self.what, self.key = n, length, what, key
        super().__init__(
            f"{key} is {n} but {what} holds {length} images; use 0 for all or a smaller number (0 <= {key} <= {length})"
        )

    def with_key(self, key: str) -> TooFewImages:
        """The same error, naming the config key `key` (get_dataset's n_key)."""
        return TooFewImages(self.n, self.length, self.what, key)

    def __reduce__(self):  # keeps the 4-argument constructor picklable
        return type(self), (self.n, self.length, self.what, self.key)


def first_n(n: int, length: int, what: str) -> int:
    """Number of items to keep: all for n == 0, else n, which must lie in [0, length]."""
    if n < 0 or n > length:
        raise TooFewImages(n, length, what)
    return n or length


def check_arrays(source: Any, x: np.ndarray, y: np.ndarray) -> None:
    """x must be (N, H, W, 3) uint8 and y (N,) integers, of the same length N; `source` (a file or
    folder) is named in the error."""
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{source}: images 'x' are {x.dtype} {x.shape}, expected uint8 (N, H, W, 3) RGB")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels 'y' are {y.dtype} {y.shape}, expected integers (N,)")
    if len(x) != len(y):
        raise DataError(
            f"{source}: {len(x)} images but {len(y)} labels; the file is inconsistent, replace it with a good copy"
        )


def check_labels(source: Any, y: np.ndarray, num_classes: int | None, dataset: str) -> None:
    """Every label must lie in [0, num_classes) (no check for num_classes None)."""
    if num_classes is None or len(y) == 0:
        return
    y = np.asarray(y)
    bad = y[(y < 0) | (y >= num_classes)]
    if len(bad):
        raise DataError(
            f"{source}: label {int(bad[0])} is outside [0, {num_classes}) of {dataset} "
            f"({len(bad)} bad labels); the file is not {dataset} data or is damaged, replace it with a good copy"
        )


def _unwrap(ds: Any) -> Any:
    """The dataset under torch Subsets (distributed.shard)."""
    while hasattr(ds, "dataset") and hasattr(ds, "indices"):
        ds = ds.dataset
    return ds


def check_dataset(
    ds: Any,
    *,
    name: str,
    image_size: int | None = None,
    num_classes: int | None = None,
    size_key: str = "data.image_size",
    classes_key: str = "data.num_classes",
) -> Any:
    """Check a loaded dataset against the config and return it unchanged.

    `image_size`: the images (of datasets that know their size without decoding: the .npz arrays,
    80M Tiny Images, uniform noise) must be image_size x image_size. Image files (ImageNet folders,
    `folder`) vary in size and are resized by their transforms, so they are not checked.
    `num_classes`: must equal the class count of dataset `name` (NUM_CLASSES, or the class folders
    of `folder`). Leave it None for an OOD source (p_ood), whose labels mean nothing.
    """
    base = _unwrap(ds)
    hw = getattr(base, "image_hw", None)
    if image_size is not None and hw is not None and tuple(hw) != (image_size, image_size):
        source = getattr(base, "source", name)
        raise DataError(
            f"{size_key} is {image_size} but {source} holds {hw[0]}x{hw[1]} images; set {size_key} "
            f"to the data's size or use {image_size}x{image_size} data"
        )
    if num_classes is not None:
        real = NUM_CLASSES.get(name)
        if real is None and name == "folder":
            real = len(getattr(base, "classes", []))
        if real is not None and real != num_classes:
            raise DataError(f"{classes_key} is {num_classes} but {name} has {real} classes; set {classes_key}: {real}")
    return ds
