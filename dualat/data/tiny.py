"""The auxiliary OOD sources p_ood of 32x32 natural images: 80M Tiny Images (the paper's), its
300K subset of Outlier Exposure, and Tiny-ImageNet-200 at 32x32 (the stand-in of the quick and
proxy profiles). docs/data.md compares them.

Tiny-ImageNet is read, in each folder of `paths.data_roots`, from `tiny-imagenet-200/` as
distributed (64x64 JPEG, box-downsampled to 32x32 on reading; dualat.data.download fetches it),
else from the offline shards `tinyimagenet32_{train50pc,val}_NN.npz` (JPEG q75).
80M Tiny Images has no download (its authors withdrew it): `tiny_images.bin` must be put in place;
`300K_random_images.npy` is downloaded (dualat.data.download) when `data.ood` names it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from dualat.data.catalog import (
    FETCH_HINT,
    OFFLINE_HINT,
    TINY_300K_FILE,
    TINY_300K_MD5,
    TINY_300K_N,
    TINY_300K_URL,
    TINYIMAGENET_FOLDER,
    TINYIMAGENET_TRAIN_PER_CLASS,
    TINYIMAGENET_URL,
    tiny_300k_text,
    tiny_text,
    tinyimagenet_folder_text,
    tinyimagenet_prefix,
)
from dualat.data.images import ArrayImages, FileImages, Transform, check_choice, from_shards, to_sample
from dualat.data.paths import DataError, DataMissingError, Roots, data_roots, download_root
from dualat.data.shards import find_shards, ignored_lookalikes
from dualat.data.validate import NUM_CLASSES, first_n


class TinyImages(Dataset):
    """80M Tiny Images read lazily from `tiny_images.bin`: records of 3072 bytes, each a 32x32x3
    image in Fortran order. Position i maps to the i-th record not excluded. Label 0."""

    RECORD = 32 * 32 * 3
    image_hw = (32, 32)

    def __init__(
        self, path: Path, excluded: np.ndarray, n: int, transform: Transform | None, provenance: str = ""
    ) -> None:
        self.path, self.transform, self.source = path, transform, str(path)
        self.provenance = provenance or tiny_text(())
        size = path.stat().st_size
        if size % self.RECORD:
            raise DataError(
                f"{path}: size {size} is not a multiple of {self.RECORD} bytes (one 32x32x3 record); the file is "
                f"truncated or not 80M Tiny Images: replace it with a complete copy"
            )
        self.num_records = size // self.RECORD
        excluded = np.unique(np.asarray(excluded, dtype=np.int64))
        if len(excluded) and (excluded[0] < 0 or excluded[-1] >= self.num_records):
            raise ValueError(
                f"exclusion index out of range [0, {self.num_records}) after index_base: "
                f"{excluded[0]}..{excluded[-1]} (is index_base right?)"
            )
        # With excluded records e_0 < e_1 < ..., position i is record i + #{k : e_k - k <= i}.
        self._shift = excluded - np.arange(len(excluded))
        self.length = first_n(n, self.num_records - len(excluded), "tiny_images")
        self._memmap: np.ndarray | None = None  # opened on first access, in each worker

    def __len__(self) -> int:
        return self.length

    def record(self, i: int) -> int:
        """Record number in tiny_images.bin (0-based) of position i."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} images")
        return i + int(np.searchsorted(self._shift, i, side="right"))

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self._memmap is None:
            self._memmap = np.memmap(self.path, np.uint8, "r", shape=(self.num_records, self.RECORD))
        img = self._memmap[self.record(i)].reshape(32, 32, 3, order="F")  # (H, W, 3)
        return to_sample(img, self.transform), 0

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the memmap (for workers): it would copy the whole file.
        return {**self.__dict__, "_memmap": None}


def _read_indices(path: Path) -> np.ndarray:
    """Record indices of an exclusion list: .npy integers or text, one integer per line."""
    try:
        if path.suffix == ".npy":
            indices = np.load(path, allow_pickle=False)
            if indices.dtype.kind not in "iu":
                raise ValueError(f"dtype {indices.dtype}, expected integers")
            return indices.astype(np.int64).ravel()
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except Exception as err:  # unreadable, truncated or not integers
        raise DataError(
            f"{path} is not a list of record indices ({type(err).__name__}: {err}); give a .npy of integers "
            f"or a text file of one integer per line"
        ) from err


def tiny_images(
    root: Roots = None,
    exclude_files: Sequence[str | Path | tuple[str | Path, int]] = (),
    index_base: int = 1,
    n: int = 0,
    transform: Transform | None = None,
) -> TinyImages:
    """80M Tiny Images from `tiny_images.bin` in the first folder of data_roots(root) holding it,
    without reading the file.

    `exclude_files` are text (one integer per line) or .npy index files of records to skip; their
    indices start at `index_base` (1 for the published CIFAR near-duplicate list
    `80mn_cifar_idxs.txt`). An entry `(path, base)` overrides the base for that file.
    """
    tried = [base / "tiny_images.bin" for base in data_roots(root)]
    found = [path for path in tried if path.is_file()]
    if not found:
        raise DataMissingError(
            "tiny_images (80M Tiny Images)",
            tried,
            f"put tiny_images.bin (79,302,017 records, 227 GB; the dataset was withdrawn by its "
            f"authors, so only existing copies remain) in {download_root(root)}; for a stand-in p_ood use "
            f"tinyimagenet32 ({OFFLINE_HINT})",
        )
    excluded = []
    for entry in exclude_files:
        file, base = entry if isinstance(entry, tuple) else (entry, index_base)
        if not Path(file).is_file():
            raise DataMissingError("tiny_images exclusion list", [file], "give the path of an existing index file")
        excluded.append(_read_indices(Path(file)) - base)
    excluded_all = np.concatenate(excluded) if excluded else np.zeros(0, np.int64)
    return TinyImages(found[0], excluded_all, n, transform, tiny_text(exclude_files))


def tiny_images_300k(root: Roots = None, transform: Transform | None = None, n: int = 0) -> ArrayImages:
    """Outlier Exposure's 300K Random Images: the first n (0 = all) images of
    `300K_random_images.npy`, uint8 (N, 32, 32, 3) (N = 300,000 in the release), memory-mapped
    (nothing is read until an image is); label 0. From the first folder of data_roots(root) holding it."""
    tried = [base / TINY_300K_FILE for base in data_roots(root)]
    found = [path for path in tried if path.is_file()]
    if not found:
        raise DataMissingError(
            "tiny_images_300k (300K Random Images)",
            tried,
            f"put {TINY_300K_FILE} ({TINY_300K_URL}, about 0.9 GB, MD5 {TINY_300K_MD5}) in {download_root(root)}, "
            + FETCH_HINT.format(name="tiny_images_300k"),
        )
    path = found[0]
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:  # truncated header, a pickle, not .npy
        raise DataError(f"{path} is not a .npy array ({type(err).__name__}: {err}): {_REFETCH_300K}") from err
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise DataError(f"{path} holds {x.dtype} {x.shape}, expected uint8 (N, 32, 32, 3): {_REFETCH_300K}")
    keep = first_n(n, len(x), "tiny_images_300k")
    text = tiny_300k_text() + ("" if len(x) == TINY_300K_N else f"; {len(x)} images, not the release's {TINY_300K_N}")
    return ArrayImages(x[:keep], np.zeros(keep, np.int64), transform, source=str(path), provenance=text)


_REFETCH_300K = f"replace it with the released file ({TINY_300K_URL})"


def tinyimagenet32(
    split: str = "train",
    root: Roots = None,
    transform: Transform | None = None,
    n: int = 0,
) -> Dataset:
    """Tiny-ImageNet-200 at 32x32, split "train" (the 50% subset: 250 images per class) or "val";
    labels index `classes`, the 200 wnids in sorted order (module docstring: sources)."""
    check_choice("split", split, ("train", "val"))
    roots, prefix = data_roots(root), tinyimagenet_prefix(split)
    for base in roots:
        if (base / TINYIMAGENET_FOLDER / split).is_dir():
            return _tinyimagenet_folder(split, base / TINYIMAGENET_FOLDER, transform, n)
        files = find_shards(base, prefix)
        if files:
            return from_shards("tinyimagenet32", split, files, transform, n)
    target = download_root(root)
    raise DataMissingError(
        "tinyimagenet32",
        [p for base in roots for p in (base / TINYIMAGENET_FOLDER / split, base / f"{prefix}_NN.npz")],
        f"put {TINYIMAGENET_FOLDER}/ (extracted from {TINYIMAGENET_URL}) in {target}, "
        + FETCH_HINT.format(name="tinyimagenet32")
        + f"; or put the {prefix}_NN.npz shards (NN = 00, 01, ...) there: {OFFLINE_HINT}"
        + "".join(ignored_lookalikes(base, prefix) for base in roots),
    )


def _tinyimagenet_folder(split: str, folder: Path, transform: Transform | None, n: int) -> FileImages:
    """The first n images of `split` from the distributed folder, read lazily at 32x32. Train is
    class-interleaved (position j * 200 + c is image j of class c), so every prefix is balanced."""
    wnids = sorted((folder / "wnids.txt").read_text().split()) if (folder / "wnids.txt").is_file() else []
    if len(wnids) != NUM_CLASSES["tinyimagenet32"]:
        raise DataError(f"{folder / 'wnids.txt'} lists {len(wnids)} wnids, Tiny-ImageNet-200 has 200: {_REFETCH}")
    if split == "train":
        per_class = [_numbered(folder / "train" / wnid / "images")[:TINYIMAGENET_TRAIN_PER_CLASS] for wnid in wnids]
        short = [wnid for wnid, files in zip(wnids, per_class) if len(files) < TINYIMAGENET_TRAIN_PER_CLASS]
        if short:
            raise DataError(
                f"{folder / 'train' / short[0] / 'images'} holds fewer than {TINYIMAGENET_TRAIN_PER_CLASS} "
                f"images ({len(short)} classes short): {_REFETCH}"
            )
        samples = [(str(files[j]), c) for j in range(TINYIMAGENET_TRAIN_PER_CLASS) for c, files in enumerate(per_class)]
    else:
        samples = _val_samples(folder, {wnid: c for c, wnid in enumerate(wnids)})
    keep = first_n(n, len(samples), f"tinyimagenet32 {split}")
    return FileImages(samples[:keep], transform, wnids, tinyimagenet_folder_text(split), size=32)


_REFETCH = f"the folder is incomplete or not Tiny-ImageNet-200; remove it and download it again ({TINYIMAGENET_URL})"


def _numbered(folder: Path) -> list[Path]:
    """The .JPEG files of a folder in the order of the number before the extension (x_2 < x_10)."""
    files = list(folder.glob("*.JPEG")) if folder.is_dir() else []
    return sorted(files, key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))


def _val_samples(folder: Path, label_of: dict[str, int]) -> list[tuple[str, int]]:
    """(image path, label) of val/images in file-number order, labels from val_annotations.txt."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"{annotations} is missing: {_REFETCH}")
    wnid_of = dict(line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip())
    samples = []
    for path in _numbered(folder / "val" / "images"):
        if wnid_of.get(path.name) not in label_of:
            raise DataError(f"{annotations} gives no known wnid for {path.name}: {_REFETCH}")
        samples.append((str(path), label_of[wnid_of[path.name]]))
    return samples
