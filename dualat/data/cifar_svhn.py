"""CIFAR-10/100 and SVHN: torchvision's own formats (lossless), CIFAR-10 also the offline shards.

Each data folder of `paths.data_roots` is searched in order; within one, CIFAR's torchvision
folder wins over the shards. With `download=True` a dataset found nowhere is downloaded first
(dualat.data.download, into the last folder: data/raw unless a root is given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualat.data import download as downloads
from dualat.data.catalog import CIFAR, FETCH_HINT, OFFLINE_HINT, SVHN_URL, lossless_text, svhn_file
from dualat.data.images import ArrayImages, Transform, check_choice, from_shards
from dualat.data.paths import DataMissingError, Roots, data_roots, download_root
from dualat.data.shards import find_shards, ignored_lookalikes
from dualat.data.validate import NUM_CLASSES, check_arrays, check_labels, first_n

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar(
    name: str,
    split: str = "train",
    root: Roots = None,
    transform: Transform | None = None,
    n: int = 0,
    download: bool = False,
) -> ArrayImages:
    """CIFAR-10/100 ("cifar10"/"cifar100"), split "train"/"test", images kept as one uint8 array.

    Sources, in each folder of data_roots(root): the torchvision folder (`cifar-10-batches-py/`
    or `cifar-100-python/`, lossless), else the offline shards `{name}_{split}_NN.npz` (JPEG q75,
    lossy; shards.py: other files are ignored, each shard is checked and verified against a
    SHA256SUMS beside it). Found nowhere and `download`: torchvision's download (MD5-checked)
    into download_root(root). `provenance` says which source was read.
    """
    check_choice("name", name, tuple(CIFAR))
    check_choice("split", split, ("train", "test"))
    roots = data_roots(root)
    folder, prefix = CIFAR[name][0], f"{name}_{split}"
    for base in roots:
        if (base / folder).is_dir():
            return _cifar_folder(name, split, base, transform, n)
        files = find_shards(base, prefix)
        if files:
            return from_shards(name, split, files, transform, n, CIFAR10_CLASSES if name == "cifar10" else None)
    if download:
        downloads.fetch_or_raise(name, download_root(root))
        return _cifar_folder(name, split, download_root(root), transform, n)
    tried = [p for base in roots for p in (base / folder, base / f"{prefix}_NN.npz")]
    how = _cifar_how(name, download_root(root))
    if name == "cifar10":
        how += f"; or use {prefix}_NN.npz shards (NN = 00, 01, ...): {OFFLINE_HINT}"
    raise DataMissingError(name, tried, how + "".join(ignored_lookalikes(base, prefix) for base in roots))


def _cifar_how(name: str, target: Path) -> str:
    """How to obtain CIFAR `name` in folder `target`."""
    folder, tv_class, url = CIFAR[name]
    return (
        f"put `{folder}/` (extracted from {url}) under {target}, or run "
        f"torchvision.datasets.{tv_class}({str(target)!r}, download=True) on a machine with internet, "
        + FETCH_HINT.format(name=name)
    )


def _cifar_folder(name: str, split: str, base: Path, transform: Transform | None, n: int) -> ArrayImages:
    """CIFAR from torchvision's folder in `base`; a folder torchvision rejects is DataMissingError."""
    folder, prefix = CIFAR[name][0], f"{name}_{split}"
    import torchvision.datasets as tvd  # lazy: ~1.3 s to import, needless without data

    try:
        tv = getattr(tvd, CIFAR[name][1])(str(base), train=split == "train")
    except RuntimeError as err:  # torchvision's integrity check failed
        also = f"; or remove it to use the {prefix}_NN.npz shards" if find_shards(base, prefix) else ""
        how = _cifar_how(name, base)
        raise DataMissingError(
            name, [base / folder, base / f"{prefix}_NN.npz"], f"{base / folder} was rejected ({err}); {how}{also}"
        ) from err
    targets = np.asarray(tv.targets)
    check_arrays(base / folder, tv.data, targets)
    check_labels(base / folder, targets, NUM_CLASSES[name], name)
    keep = first_n(n, len(tv.data), f"{name} {split}")
    return ArrayImages(
        tv.data[:keep],
        targets[:keep],
        transform,
        tv.classes,
        source=str(base / folder),
        provenance=lossless_text(folder),
    )


def svhn(
    split: str = "test",
    root: Roots = None,
    transform: Transform | None = None,
    n: int = 0,
    download: bool = False,
) -> ArrayImages:
    """SVHN (split "train"/"test"/"extra") from torchvision's `{split}_32x32.mat` in the first
    folder of data_roots(root) holding it (downloaded first if found nowhere and `download`);
    digit 0 has label 0 (the .mat file's label 10)."""
    check_choice("split", split, ("train", "test", "extra"))
    roots = data_roots(root)
    found = [base for base in roots if (base / svhn_file(split)).is_file()]
    if not found and download:
        downloads.fetch_or_raise("svhn", download_root(root), splits=(split,))
        found = [download_root(root)]
    if not found:
        file = download_root(root) / svhn_file(split)
        how = (
            f"put {file.name} (from {SVHN_URL.format(file=file.name)}) in {file.parent}, or run "
            f"torchvision.datasets.SVHN({str(file.parent)!r}, split={split!r}, download=True), "
            + FETCH_HINT.format(name="svhn")
        )
        raise DataMissingError("svhn", [base / svhn_file(split) for base in roots], how)
    file = found[0] / svhn_file(split)
    try:
        import torchvision.datasets as tvd  # lazy: ~1.3 s to import, needless without data

        tv = tvd.SVHN(str(found[0]), split=split)
    except RuntimeError as err:
        how = f"replace it with torchvision.datasets.SVHN({str(found[0])!r}, split={split!r}, download=True)"
        raise DataMissingError("svhn", [file], f"{file} was rejected ({err}); {how}") from err
    x = tv.data.transpose(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3), a view
    labels = np.asarray(tv.labels).ravel()
    check_arrays(file, x, labels)
    check_labels(file, labels, NUM_CLASSES["svhn"], "svhn")
    keep = first_n(n, len(x), f"svhn {split}")
    digits = [str(d) for d in range(10)]
    return ArrayImages(
        x[:keep], labels[:keep], transform, digits, source=str(file), provenance=lossless_text(file.name)
    )
