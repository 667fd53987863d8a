"""A fingerprint of the data files a dataset's stages read: names and sizes, no bytes.

DVC compares `data/prepared/<dataset>/sources.json` (written by the `data_sources` stage, which
runs on every `dvc repro`, see dvc.yaml): when a data folder is fixed, filled or changed, the
fingerprint changes and `prepare` and everything after it rerun; when it is unchanged they stay
cached. Training runs keep the fingerprint in their resume key (`dualat.runs`).

The stage runs after `preflight` (dualat.preflight), which downloads the public datasets missing
from every data folder, so that what it fingerprints is what the later stages read. No torch
import, so the stage starts fast. Run as `python -m dualat.data.fingerprint DATASET OUT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from dualat import config
from dualat.data.paths import Roots, data_roots

# What each dataset reads below a data root (globs; folders are listed recursively, except that a
# glob ending in "/" lists each matching folder as one entry: its name and number of files).
PATTERNS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10_*.npz", "cifar-10-batches-py", "SHA256SUMS"),
    "cifar100": ("cifar100_*.npz", "cifar-100-python", "SHA256SUMS"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "tiny_images": ("tiny_images.bin", "*tiny*exclu*", "*cifar*idxs*"),
    "tiny_images_300k": ("300K_random_images.npy",),
    "tinyimagenet32": (
        "tinyimagenet32_*.npz",
        "SHA256SUMS",
        "tiny-imagenet-200/wnids.txt",
        "tiny-imagenet-200/train/*/images/",
        "tiny-imagenet-200/val/val_annotations.txt",
        "tiny-imagenet-200/val/images/",
    ),
    "rin": ("imagenet/train/*/", "imagenet/val/*/"),
    "imagenet_od": ("imagenet/train/*/", "imagenet/val/*/"),
    "noise": (),
}


def _entries(root: Path, pattern: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file matching `pattern` under `root` (folders recursively);
    (relative path + "/", number of entries) of each folder matching a pattern ending in "/"."""
    out = []
    for path in sorted(root.glob(pattern.rstrip("/"))):
        if path.is_file() and not pattern.endswith("/"):
            out.append((str(path.relative_to(root)), path.stat().st_size))
        elif path.is_dir() and pattern.endswith("/"):
            out.append((f"{path.relative_to(root)}/", sum(1 for _ in os.scandir(path))))
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                out.append((str(f.relative_to(root)), f.stat().st_size))
    return out


def fingerprint(datasets: list[str], root: Roots = None) -> dict:
    """{"root", "files": {dataset: [[path, size], ...]}, "sha256": {dataset: hex}} of the named
    datasets in the folders of data_roots(root) (a dataset with no files has an empty list: it is
    missing). Files of a folder after the first are listed under that folder's path (e.g.
    data/raw/cifar-100-python/...), and the folders under "roots"."""
    roots = data_roots(root)
    files = {
        name: [
            [e[0] if k == 0 else str(base / e[0]), e[1]]
            for k, base in enumerate(roots)
            for p in PATTERNS.get(name, ())
            for e in _entries(base, p)
        ]
        for name in datasets
    }
    digests = {name: hashlib.sha256(json.dumps(v).encode()).hexdigest() for name, v in files.items()}
    out = {"root": str(roots[0].resolve()), "files": files, "sha256": digests}
    return out | ({"roots": [str(r) for r in roots]} if len(roots) > 1 else {})


def write_json(out: str | os.PathLike, content: dict) -> None:
    """Write `content` to `out` as JSON (atomically), only when it differs from what is there: an
    unchanged file keeps its time stamp, and DVC sees no change."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    out = Path(out)
    if not out.is_file() or out.read_text() != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)


def write(out: str | os.PathLike, datasets: list[str], root: str | os.PathLike | None = None) -> dict:
    """Write the fingerprint to `out` (JSON), rewriting it only when its content changes."""
    fp = fingerprint(datasets, root)
    write_json(out, fp)
    return fp


def main(argv: list[str]) -> None:
    """`python -m dualat.data.fingerprint DATASET OUT`: write the fingerprint of every source the
    dataset's stages read under params.yaml's profile (training set, p_ood, the OOD test sets).
    The downloads ran before, in the preflight stage (dualat.preflight)."""

    if len(argv) != 2:
        sys.exit("usage: python -m dualat.data.fingerprint DATASET OUT")
    dataset, out = argv
    try:  # the first stage of `dvc repro`: a wrong key or profile stops the pipeline here, named
        cfg = config.load(dataset=dataset)
    except config.ConfigError as e:
        sys.exit(f"params.yaml: {e}")
    write(out, source_names(cfg), cfg.data_root)


def source_names(cfg: config.Config) -> list[str]:
    """The data sources a dataset's stages read: the training (and test) set, p_ood, the OOD test sets."""
    return list(dict.fromkeys([cfg.data.dataset, cfg.data.ood, *cfg.evaluate.ood_sets]))


if __name__ == "__main__":
    main(sys.argv[1:])
