"""Offline uint8 .npz shards: which files are shards, reading them with every check, and
verifying them against a SHA256SUMS file beside them.

A shard of `prefix` (e.g. "cifar10_train") is a file named exactly `<prefix>_NN.npz`, NN two
digits. Anything else in the folder is ignored and never loaded: copies such as
`cifar10_train_00 (1).npz`, backups such as `cifar10_train_00.npz.bak`, the
`cifar10_train_lossless_first4000.npz` subset. Shards must be numbered 00, 01, ... without a gap;
a missing number raises DataError, since a lost shard would silently shrink the dataset.

Every problem with a shard raises DataError naming the file and the remedy: a file that cannot be
read (truncated, corrupt LZMA or zip), missing `x`/`y` arrays, wrong dtype or shape, as many
labels as images, labels outside [0, num_classes), a SHA-256 that differs from SHA256SUMS.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dualat.data.paths import DataError
from dualat.data.validate import check_arrays, check_labels

SUMS_FILE = "SHA256SUMS"
REMEDY = (
    "replace it with a good copy (re-download it, or restore it from the project's offline data, "
    "../shared/datasets/ from the project root: see its README.md) or remove it"
)
Shard = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def find_shards(root: Path, prefix: str) -> list[Path]:
    """The shards `<prefix>_NN.npz` in root, sorted; other files are ignored (module docstring)."""
    name = re.compile(rf"{re.escape(prefix)}_(\d\d)\.npz")
    found = sorted(p for p in Path(root).glob(f"{prefix}_*.npz") if name.fullmatch(p.name) and p.is_file())
    for k, path in enumerate(found):
        if int(name.fullmatch(path.name)[1]) != k:
            raise DataError(
                f"{path.with_name(f'{prefix}_{k:02d}.npz')} is missing but {path.name} is there: shards "
                f"are numbered from 00 without gaps, so a missing one would silently shrink the dataset; "
                f"restore it (see ../shared/datasets/README.md) or remove the shards after it"
            )
    return found


def ignored_lookalikes(root: Path, prefix: str) -> str:
    """A note on files in root that start like shards of `prefix` but are not named <prefix>_NN.npz
    (e.g. `cifar10_train_00 (1).npz`), for a DataMissingError; "" if there are none."""
    name = re.compile(rf"{re.escape(prefix)}_\d\d\.npz")
    odd = sorted(
        p.name for p in Path(root).glob(f"{prefix}_*") if not name.fullmatch(p.name) and "lossless" not in p.name
    )
    return f" ({', '.join(odd)} in {root} ignored: only files named {prefix}_NN.npz are shards)" if odd else ""


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, computed once per (path, size, mtime) in this process."""
    from dualat.records import sha256_file  # the one cached file hash; local: records imports torch

    return sha256_file(path)


@functools.lru_cache(maxsize=8)
def _read_sums(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    """file name -> hex digest of a `sha256sum` output file (`<hex>  <name>` or `<hex> *<name>`)."""
    sums = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if match is None:
            raise DataError(
                f"{path} line {number} is not `<sha256>  <file name>`: {line!r}; fix or remove the checksum file"
            )
        sums[Path(match[2]).name] = match[1].lower()
    return sums


def verify_sha256(file: Path) -> None:
    """Check `file` against the SHA256SUMS in its folder. A folder without one, or a file it does
    not list (e.g. a shard made locally), is not checked."""
    sums = Path(file).parent / SUMS_FILE
    if not sums.is_file():
        return
    expected = _read_sums(*_stamp(sums)).get(Path(file).name)
    if expected is None:
        return
    actual = file_sha256(Path(file))
    if actual != expected:
        raise DataError(
            f"{file}: SHA-256 is {actual} but {sums} lists {expected}; the file is damaged or another version: {REMEDY}"
        )


def read_shard(file: Path, num_classes: int | None = None, dataset: str = "") -> Shard:
    """x (N, H, W, 3) uint8, y (N,) int64 and the other arrays of one shard, all checked."""
    verify_sha256(file)
    try:
        with np.load(file, allow_pickle=False) as d:
            missing = [k for k in ("x", "y") if k not in d.files]
            if missing:
                raise DataError(
                    f"{file} has no array {' or '.join(map(repr, missing))} (it holds {d.files}); a shard "
                    f"holds 'x' (N, H, W, 3) uint8 and 'y' (N,) labels: {REMEDY}"
                )
            x, y = d["x"], d["y"]
            extra = {k: d[k] for k in d.files if k not in ("x", "y")}
    except DataError:
        raise
    except Exception as err:  # zip, LZMA, zlib, npy-header and I/O errors all mean a bad file
        raise DataError(
            f"{file} cannot be read ({type(err).__name__}: {err}); it is truncated or corrupt: {REMEDY}"
        ) from err
    check_arrays(file, x, y)
    check_labels(file, y, num_classes, dataset)
    return x, y.astype(np.int64), extra


def load_shards(files: Sequence[Path], n: int, num_classes: int | None = None, dataset: str = "") -> Shard:
    """Concatenate x (N, H, W, 3) uint8 and y (N,) of the shards, stopping once n are loaded.
    All shards (n == 0) are decompressed in threads: LZMA is slow (about 2 s per shard)."""

    def read(file: Path) -> Shard:
        return read_shard(file, num_classes, dataset)

    if n:
        shards: list[Shard] = []
        while sum(len(x) for x, _, _ in shards) < n and len(shards) < len(files):
            shards.append(read(files[len(shards)]))
    else:
        with ThreadPoolExecutor(min(len(files), os.cpu_count() or 1)) as pool:
            shards = list(pool.map(read, files))
    for file, (x, _, _) in zip(files, shards):
        if x.shape[1:] != shards[0][0].shape[1:]:
            raise DataError(
                f"{file} holds {x.shape[1]}x{x.shape[2]} images but {files[0]} holds "
                f"{shards[0][0].shape[1]}x{shards[0][0].shape[2]}: {REMEDY}"
            )
    extra = {k: v for _, _, e in shards for k, v in e.items()}
    return np.concatenate([x for x, _, _ in shards]), np.concatenate([y for _, y, _ in shards]), extra


@functools.lru_cache(maxsize=4)
def _cached(files: tuple[Path, ...], stamps: tuple, n: int, num_classes: int | None, dataset: str) -> Shard:
    x, y, extra = load_shards(files, n, num_classes, dataset)
    x.flags.writeable = y.flags.writeable = False
    return x, y, extra


def cached_shards(files: Sequence[Path], n: int, num_classes: int | None = None, dataset: str = "") -> Shard:
    """load_shards, kept per process (stage 2 reads the training set twice) with read-only arrays;
    a shard changed on disk (size or mtime) is read again."""
    files = tuple(files)
    stamps = tuple(_stamp(f)[1:] for f in files)
    return _cached(files, stamps, n, num_classes, dataset)
