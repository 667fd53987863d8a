"""What each dataset's files are called, where they come from, and how a source is described.

No torch import (numpy only, through shards.find_shards), so `describe`, the fingerprint stage
and the downloads can see what is present quickly, without reading any image.

Sources of a dataset, in each data folder of `paths.data_roots` (folders in their order):
CIFAR-10/100: the torchvision folder (lossless), else the offline JPEG shards;
Tiny-ImageNet 32x32: the `tiny-imagenet-200/` folder as distributed, else the offline shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualat.data.paths import DataError, Roots, data_roots, roots_text
from dualat.data.shards import find_shards

DATASETS = (
    "cifar10",
    "cifar100",
    "svhn",
    "tiny_images",
    "tiny_images_300k",
    "tinyimagenet32",
    "rin",
    "imagenet_od",
    "noise",
    "folder",
)
# Datasets with a public download (dualat.data.download); the others must be put in place.
DOWNLOADABLE = ("cifar10", "cifar100", "svhn", "tinyimagenet32", "tiny_images_300k")

SHARDS_NOTE = "JPEG q75 offline copy, lossy: see ../shared/datasets/README.md"
OFFLINE_HINT = (
    "the project's offline uint8 .npz copies (../shared/datasets/ from the project root, see its "
    "README.md) are such shards"
)
FETCH_HINT = "or download it with `python -m dualat.data.download {name}` (`dvc repro` does so when online)"

# name -> (torchvision folder, torchvision class, archive URL)
CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        "CIFAR10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        "CIFAR100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/{file}"  # torchvision.datasets.SVHN.split_list

# Tiny-ImageNet-200 (CS231n): 200 classes, 500 train and 50 val images per class, 64x64 JPEG.
# torchvision has no class for it; its download helper fetches the zip and checks this MD5 (the
# archive's published digest, 248,100,043 bytes, as listed by several public loaders).
TINYIMAGENET_FOLDER = "tiny-imagenet-200"
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINYIMAGENET_TRAIN_PER_CLASS = 250  # the "train50pc" subset: the first half of each class


# The p_ood sources (params.yaml `data.ood`; docs/data.md): where each comes from, for provenance.
# 80M Tiny Images (Torralba et al. 2008; the paper's p_ood for CIFAR, Table 5) was withdrawn by its
# authors in 2020; an archive.org mirror is cited by OOD code (e.g. kkirchheim/pytorch-ood,
# pytorch_ood/dataset/img/tinyimages.py: archive.org/details/80-million-tiny-images-2-of-2 holds
# tiny_images.bin); no published checksum of it was found.
TINY_IMAGES_FILE = "tiny_images.bin"
TINY_IMAGES_MIRROR = "https://archive.org/details/80-million-tiny-images-2-of-2"
# Hendrycks et al.'s "300K Random Images" (Outlier Exposure, ICLR 2019; github.com/hendrycks/
# outlier-exposure): a 300,000-image subset of 80M Tiny Images with images of CIFAR classes, of
# Places/LSUN classes and with divisive metadata removed; one .npy of uint8 (300000, 32, 32, 3).
# URL and MD5 as kkirchheim/pytorch-ood's TinyImages300k gives them (not verified here: offline).
TINY_300K_FILE = "300K_random_images.npy"
TINY_300K_URL = "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy"
TINY_300K_MD5 = "64ca64357de98351f28454274a112dc3"
TINY_300K_N = 300_000


def svhn_file(split: str) -> str:
    """torchvision's SVHN file of a split, e.g. `test_32x32.mat`."""
    return f"{split}_32x32.mat"


def tinyimagenet_prefix(split: str) -> str:
    """Shard prefix of Tiny-ImageNet 32x32: train (the 50% subset) or val."""
    return f"tinyimagenet32_{'train50pc' if split == 'train' else 'val'}"


# --- provenance: which files a dataset is read from, and whether losslessly ---------------------


def lossless_text(file: str) -> str:
    return f"{file} (lossless, torchvision format)"


def shards_text(files: Sequence[Path]) -> str:
    """Provenance of offline shards: their name pattern, count and lossiness."""
    prefix = files[0].name[: -len("_00.npz")]
    return f"{prefix}_NN.npz ({len(files)} shards; {SHARDS_NOTE})"


def tinyimagenet_folder_text(split: str) -> str:
    return f"{TINYIMAGENET_FOLDER}/{split} (Tiny-ImageNet-200 JPEG as distributed, 64x64 box-downsampled to 32x32)"


def tiny_text(exclude_files: Sequence) -> str:
    names = [Path(e[0] if isinstance(e, tuple) else e).name for e in exclude_files]
    without = f"without the records listed in {', '.join(names)}" if names else "no exclusion list"
    return f"tiny_images.bin (80M Tiny Images, {without})"


def tiny_300k_text() -> str:
    return f"{TINY_300K_FILE} (300K Random Images of Outlier Exposure, a subset of 80M Tiny Images; lossless uint8)"


def imagenet_text(split: str) -> str:
    return f"imagenet/{split} (ILSVRC2012 class folders, JPEG as distributed)"


def noise_text(seed: int) -> str:
    return f"uniform noise (generated, seed {seed} + index)"


def folder_text(folder: Path) -> str:
    return f"{folder} (image folder)"


# --- describe ------------------------------------------------------------------------------------


def describe(name: str, split: str = "train", root: Roots = None, **kw: Any) -> str:
    """The `provenance` string of `get_dataset(name, split, root, **kw)`, without reading images
    ("not found: ..." when the source is missing, "invalid: ..." for misnumbered shards). Keywords
    as for get_dataset: exclude_files (tiny_images), seed (noise)."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    roots = data_roots(root)
    try:
        if name == "folder":
            return folder_text(roots[0]) if roots[0].is_dir() else f"not found: folder ({split}) under {roots[0]}"
        for folder in roots:
            text = _present_text(name, split, folder, **kw)
            if text is not None:
                return text
    except DataError as err:
        return f"invalid: {err}"
    return f"not found: {_wanted(name, split)} {roots_text(roots)}"


def _present_text(name: str, split: str, root: Path, **kw: Any) -> str | None:
    """The provenance of `name` read from `root`, None when root does not hold it."""
    if name in CIFAR:
        folder = CIFAR[name][0]
        if (root / folder).is_dir():
            return lossless_text(folder)
        files = find_shards(root, f"{name}_{split}")
        return shards_text(files) if files else None
    if name == "tinyimagenet32":
        if (root / TINYIMAGENET_FOLDER / split).is_dir():
            return tinyimagenet_folder_text(split)
        files = find_shards(root, tinyimagenet_prefix(split))
        return shards_text(files) if files else None
    present = {
        "svhn": lambda: (root / svhn_file(split)).is_file(),
        "tiny_images": lambda: (root / TINY_IMAGES_FILE).is_file(),
        "tiny_images_300k": lambda: (root / TINY_300K_FILE).is_file(),
        "rin": lambda: (root / "imagenet" / split).is_dir(),
        "imagenet_od": lambda: (root / "imagenet" / split).is_dir(),
        "noise": lambda: True,
    }
    texts = {
        "svhn": lambda: lossless_text(svhn_file(split)),
        "tiny_images": lambda: tiny_text(kw.get("exclude_files", ())),
        "tiny_images_300k": tiny_300k_text,
        "rin": lambda: imagenet_text(split),
        "imagenet_od": lambda: imagenet_text(split),
        "noise": lambda: noise_text(kw.get("seed", 0)),
    }
    return texts[name]() if present[name]() else None


def _wanted(name: str, split: str) -> str:
    """What `describe` looked for, for its "not found" line (ending in "in" or "under")."""
    if name in CIFAR:
        return f"neither {CIFAR[name][0]}/ nor {name}_{split}_NN.npz in"
    if name == "tinyimagenet32":
        return f"neither {TINYIMAGENET_FOLDER}/{split}/ nor {tinyimagenet_prefix(split)}_NN.npz in"
    if name in ("rin", "imagenet_od"):
        return f"no imagenet/{split}/ in"
    if name == "svhn":
        return f"no {svhn_file(split)} in"
    if name in ("tiny_images", "tiny_images_300k"):
        return f"no {TINY_IMAGES_FILE if name == 'tiny_images' else TINY_300K_FILE} in"
    return f"{name} ({split}) under"
