"""Datasets, the two augmentation pipelines and deterministic, resumable loaders.

Images are float tensors in [0, 1]: (C, H, W) per sample, (B, C, H, W) in batches.

    from dualat import data
    train = data.cifar("cifar10", "train", transform=data.classification_transform("cifar10"))
    loader = data.make_loader(train, 128, shuffle=True, seed=0)

Importing this package reads no files and does not import torch: the names below load their
submodule (sources, augment, streams, ...) on first use, so `import dualat.data` stays fast.

Modules: paths (data folders, errors), catalog (file names, `describe`; no torch), download
(fetching the public datasets), shards and validate (offline .npz shards, checks), images (the
dataset classes), cifar_svhn / tiny / imagenet (loaders by source family), sources
(`get_dataset`), augment (Table 6 pipelines), streams (deterministic, resumable loaders),
fingerprint (what DVC sees of the data).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dualat.data.paths import DATA_ENV, DataError, DataMissingError, data_root, data_roots

# Searched in this order for a name: light modules first (catalog, download: no torch; streams:
# torch; sources, augment: torch and torchvision).
_SUBMODULES = ("validate", "shards", "catalog", "download", "streams", "sources", "augment")

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DATA_ENV",
    "DOWNLOADABLE",
    "GENERATIVE_KINDS",
    "NUM_CLASSES",
    "RATIO_CIFAR_FILL",
    "RIN_CLASSES",
    "RIN_RANGES",
    "ArrayImages",
    "BatchStream",
    "Cutout",
    "DataError",
    "DataMissingError",
    "DownloadFailed",
    "FileImages",
    "Lighting",
    "SeededSamples",
    "Stage2Batch",
    "Stage2Streams",
    "TinyImages",
    "TooFewImages",
    "UniformNoise",
    "check_dataset",
    "cifar",
    "classification_transform",
    "data_root",
    "data_roots",
    "derive_seed",
    "describe",
    "epoch_order",
    "fetch",
    "fetch_missing",
    "file_sha256",
    "find_shards",
    "generative_transform",
    "get_dataset",
    "image_folder",
    "imagenet_od",
    "infinite",
    "make_loader",
    "read_shard",
    "restricted_imagenet",
    "rin_label",
    "stage2_streams",
    "svhn",
    "test_transform",
    "tiny_images",
    "tiny_images_300k",
    "tinyimagenet32",
    "uniform_noise",
    "verify_sha256",
]


def __getattr__(name: str) -> Any:  # PEP 562: import the submodules on first use
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for sub in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{sub}")
        if hasattr(module, name):
            globals()[name] = value = getattr(module, name)
            return value
    raise AttributeError(f"{__name__}.{name} is listed in __all__ but defined nowhere")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# For type checkers and IDEs; at run time __getattr__ imports lazily.
if TYPE_CHECKING:
    from dualat.data.augment import (
        GENERATIVE_KINDS,
        RATIO_CIFAR_FILL,
        Cutout,
        Lighting,
        classification_transform,
        generative_transform,
        test_transform,
    )
    from dualat.data.catalog import DATASETS, DOWNLOADABLE, describe
    from dualat.data.download import DownloadFailed, fetch, fetch_missing
    from dualat.data.shards import file_sha256, find_shards, read_shard, verify_sha256
    from dualat.data.sources import (
        CIFAR10_CLASSES,
        RIN_CLASSES,
        RIN_RANGES,
        ArrayImages,
        FileImages,
        TinyImages,
        UniformNoise,
        cifar,
        get_dataset,
        image_folder,
        imagenet_od,
        restricted_imagenet,
        rin_label,
        svhn,
        tiny_images,
        tiny_images_300k,
        tinyimagenet32,
        uniform_noise,
    )
    from dualat.data.streams import (
        BatchStream,
        SeededSamples,
        Stage2Batch,
        Stage2Streams,
        derive_seed,
        epoch_order,
        infinite,
        make_loader,
        stage2_streams,
    )
    from dualat.data.validate import NUM_CLASSES, TooFewImages, check_dataset
