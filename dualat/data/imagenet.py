"""RestrictedImageNet (9 super-classes of ImageNet) and ImageNetOD (the other classes), read from
ILSVRC2012 class folders. ImageNet has no public download: the folders must be put in place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dualat.data.catalog import imagenet_text
from dualat.data.images import FileImages, Transform, check_choice
from dualat.data.paths import DataMissingError, Roots, data_roots, download_root
from dualat.data.validate import first_n

# RestrictedImageNet super-classes as inclusive ImageNet class-index ranges (REFERENCE.md, "Model
# and energy"; Tsipras et al. 2019). The label is the position in this tuple: dog 0 ... insect 8.
RIN_CLASSES = ("dog", "cat", "frog", "turtle", "bird", "monkey", "fish", "crab", "insect")
RIN_RANGES = ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397), (118, 121), (300, 319))


def rin_label(imagenet_class: int) -> int | None:
    """RestrictedImageNet super-class (0..8) of an ImageNet class index, None if outside."""
    for label, (lo, hi) in enumerate(RIN_RANGES):
        if lo <= imagenet_class <= hi:
            return label
    return None


def _imagenet_samples(
    split: str,
    root: Roots,
    label_of: Callable[[int], int | None],
    what: str,
) -> list[tuple[str, int]]:
    """(path, label_of(imagenet index)) for the images of <root>/imagenet/<split> (the first
    folder of data_roots(root) holding it) whose label is not None, in ImageFolder order."""
    check_choice("split", split, ("train", "val"))
    tried = [base / "imagenet" / split for base in data_roots(root)]
    target = download_root(root) / "imagenet" / split
    how = (
        f"put ILSVRC2012 {split} images at {target}/<wnid>/*.JPEG, one folder per wnid "
        f"(https://image-net.org/download; torchvision.datasets.ImageNet({str(target.parent)!r}, "
        f"split={split!r}) builds this layout from ILSVRC2012_img_{split}.tar and "
        f"ILSVRC2012_devkit_t12.tar.gz placed in {target.parent})"
    )
    found = [folder for folder in tried if folder.is_dir()]
    if not found:
        raise DataMissingError(what, tried, how)
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset  # lazy: ~1.3 s to import

    classes, class_to_idx = find_classes(found[0])
    if len(classes) != 1000:
        raise DataMissingError(
            what,
            [found[0]],
            f"{found[0]} holds {len(classes)} class folders, ImageNet needs exactly 1000 (the class "
            f"index is the position of the wnid in sorted order); {how}",
        )
    wanted = {w: i for w, i in class_to_idx.items() if label_of(i) is not None}
    images = make_dataset(found[0], wanted, extensions=IMG_EXTENSIONS, allow_empty=True)
    return [(path, label_of(i)) for path, i in images]


def restricted_imagenet(
    split: str = "train",
    root: Roots = None,
    transform: Transform | None = None,
    balance: bool = False,
    n: int = 0,
) -> FileImages:
    """RestrictedImageNet: the images of the 9 super-classes (RIN_RANGES), labels 0..8.

    Reads `<root>/imagenet/{train,val}/<wnid>/` (ImageFolder layout, 1000 wnid folders). With
    `balance`, `sample_weights` (N,) float64 is the inverse super-class frequency, for a
    WeightedRandomSampler or make_loader(sampler_weights=...). n > 0 keeps the first n in folder
    (hence class) order.
    """
    samples = _imagenet_samples(split, root, rin_label, "RestrictedImageNet (ImageNet)")
    ds = FileImages(samples[: first_n(n, len(samples), f"rin {split}")], transform, RIN_CLASSES, imagenet_text(split))
    if balance:
        labels = torch.tensor(ds.targets, dtype=torch.long)
        counts = torch.bincount(labels, minlength=len(RIN_CLASSES)).double()
        ds.sample_weights = 1.0 / counts[labels]
    return ds


def imagenet_od(
    split: str = "val",
    root: Roots = None,
    transform: Transform | None = None,
    n: int = 0,
) -> FileImages:
    """ImageNetOD: all images of the ImageNet classes outside RestrictedImageNet, label 0."""
    samples = _imagenet_samples(
        split,
        root,
        lambda i: 0 if rin_label(i) is None else None,
        "ImageNetOD (ImageNet)",
    )
    keep = first_n(n, len(samples), f"imagenet_od {split}")
    return FileImages(samples[:keep], transform, ["ood"], imagenet_text(split))
