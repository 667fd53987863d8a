"""The data sets a `Config` names, read through `dualat.data` and checked against the config:
the training set, the test set and p_ood (the auxiliary OOD source of stage 2, RATIO and the
sample seeds); where each is read from; whether the profile covers the dataset at all.

A missing source raises `DataMissingError` when read; `missing_data` turns it into the
`NotComputed` reason that the stages write into their status files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from dualat.config import PROFILE_DATASETS, Config
from dualat.data import DataMissingError, check_dataset, data_root, data_roots, describe, get_dataset, test_transform
from dualat.data.fingerprint import fingerprint
from dualat.records import NotComputed


def root(cfg: Config) -> Path:
    """The data root of `cfg.data_root` (else $DUALAT_DATA, see `dualat.data.data_root`)."""
    return data_root(cfg.data_root)


def roots(cfg: Config) -> list[Path]:
    """The data folders searched in order: `data_root` alone when set, else $DUALAT_DATA (if set)
    then data/raw/, where downloads go (`dualat.data.data_roots`, docs/data.md)."""
    return data_roots(cfg.data_root)


def data_fingerprint(cfg: Config) -> dict[str, str]:
    """sha256 of the file list (names and sizes) of the training set and of p_ood."""
    return fingerprint([cfg.data.dataset, cfg.data.ood], cfg.data_root)["sha256"]


def checked(cfg: Config, ds, name: str, classes: bool = True):
    """ds after data.check_dataset against data.image_size (and data.num_classes if `classes`)."""
    num_classes = cfg.data.num_classes if classes else None
    return check_dataset(ds, name=name, image_size=cfg.data.image_size, num_classes=num_classes)


def train_set(cfg: Config, transform=None):
    """The first `data.n_train` training images (0 = all), through `transform`."""
    balance = {"balance": cfg.data.rin_balance} if cfg.data.dataset == "rin" else {}
    ds = get_dataset(
        cfg.data.dataset, "train", roots(cfg), transform, n=cfg.data.n_train, n_key="data.n_train", **balance
    )
    return checked(cfg, ds, cfg.data.dataset)


def test_set(cfg: Config, n: int | None = None):
    """The first `n` test images (default `data.n_test`; 0 = all) with the test transform
    (RestrictedImageNet: its validation split)."""
    n_key = "data.n_test" if n is None else "n"
    n = cfg.data.n_test if n is None else n
    ds = get_dataset(
        cfg.data.dataset,
        "test" if cfg.data.dataset != "rin" else "val",
        roots(cfg),
        test_transform(cfg.data.dataset),
        n=n,
        n_key=n_key,
    )
    return checked(cfg, ds, cfg.data.dataset)


def ood_set(cfg: Config, transform=None):
    """p_ood, the auxiliary OOD source of stage 2, RATIO and the sample seeds."""
    exclusion, note = _ood_exclusion(cfg)
    ds = get_dataset(cfg.data.ood, "train", roots(cfg), transform, n=cfg.data.n_ood, n_key="data.n_ood", **exclusion)
    if note:
        ds.provenance += note
    return checked(cfg, ds, cfg.data.ood, classes=False)


def ood_exclude_file(cfg: Config) -> Path | None:
    """The file of `data.ood_exclude` (a relative path lies under the data root); None for ""."""
    if not cfg.data.ood_exclude:
        return None
    path = Path(cfg.data.ood_exclude)
    return path if path.is_absolute() else root(cfg) / path


def _ood_exclusion(cfg: Config) -> tuple[dict, str]:
    """get_dataset keywords for p_ood's exclusion list (80M Tiny Images only) and a provenance
    note when the configured list is absent (then nothing is excluded, with a warning)."""
    file = ood_exclude_file(cfg)
    if cfg.data.ood != "tiny_images" or file is None:
        return {}, ""
    if file.is_file():
        return {"exclude_files": [file]}, ""
    note = f"; data.ood_exclude {file} not found, so no CIFAR near-duplicates were excluded"
    warnings.warn(note[2:], stacklevel=3)
    return {}, note


def data_provenance(cfg: Config) -> dict[str, str]:
    """Where the training set, the test set and p_ood are read from, and whether losslessly
    (`data.describe`; e.g. the lossless torchvision CIFAR folder or the JPEG offline shards)."""
    dataset, base = cfg.data.dataset, roots(cfg)
    exclusion, note = _ood_exclusion(cfg)
    return {
        "train": describe(dataset, "train", base),
        "test": describe(dataset, "test" if dataset != "rin" else "val", base),
        "p_ood": describe(cfg.data.ood, "train", base, **exclusion) + note,
    }


def stack_range(dataset, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items start..stop-1 of a dataset as tensors (B, C, H, W), (B,)."""
    items = [dataset[i] for i in range(start, stop)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def stack(dataset, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n items (0 = all) as tensors (N, C, H, W), (N,)."""
    return stack_range(dataset, 0, len(dataset) if n == 0 else min(n, len(dataset)))


def profile_scope(cfg: Config) -> NotComputed | None:
    """NotComputed when `cfg.profile` does not cover `cfg.data.dataset` (proxy: CIFAR-10 only)."""
    covered = PROFILE_DATASETS.get(cfg.profile)
    if covered is None or cfg.data.dataset in covered:
        return None
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "rin": "RestrictedImageNet"}
    return NotComputed(f"{cfg.profile} profile is {' and '.join(names[d] for d in covered)} only")


def missing_data(cfg: Config) -> NotComputed | None:
    """NotComputed naming the missing source when training data, test data or p_ood is absent,
    or when the profile does not cover the dataset (`profile_scope`)."""
    scope = profile_scope(cfg)
    if scope is not None:
        return scope
    try:
        train_set(cfg), test_set(cfg), ood_set(cfg)
    except DataMissingError as e:
        return NotComputed(" ".join(str(e).split()) + " (docs/data.md)")
    return None
