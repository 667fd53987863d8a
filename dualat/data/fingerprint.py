"""A fingerprint of the data files a dataset's stages read: names and sizes, no bytes.

DVC compares `data/prepared/<dataset>/sources.json` (written by the `data_sources` stage, which
runs on every `dvc repro`, see dvc.yaml): when a data folder is fixed, filled or changed, the
fingerprint changes and `prepare` and everything after it rerun; when it is unchanged they stay
cached. Training runs keep the fingerprint in their resume key (`dualat.runs`).

No torch import, so the stage starts fast. Run as `python -m dualat.data.fingerprint DATASET OUT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from dualat.data.paths import data_root

# What each dataset reads below the data root (globs; folders are listed recursively).
PATTERNS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10_*.npz", "cifar-10-batches-py", "SHA256SUMS"),
    "cifar100": ("cifar100_*.npz", "cifar-100-python", "SHA256SUMS"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "tiny_images": ("tiny_images.bin", "*tiny*exclu*", "*cifar*idxs*"),
    "tinyimagenet32": ("tinyimagenet32_*.npz", "SHA256SUMS"),
    "rin": ("imagenet/train", "imagenet/val"),
    "imagenet_od": ("imagenet/train", "imagenet/val"),
    "noise": (),
}


def _entries(root: Path, pattern: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file matching `pattern` under `root` (folders recursively).

    ImageNet folders are summarised per class folder (name, number of files) instead of per file."""
    out = []
    for path in sorted(root.glob(pattern)):
        if path.is_file():
            out.append((str(path.relative_to(root)), path.stat().st_size))
        elif path.is_dir() and path.parts[-2:-1] == ("imagenet",):
            for sub in sorted(os.scandir(path), key=lambda e: e.name):
                if sub.is_dir():
                    out.append((f"{path.relative_to(root)}/{sub.name}/", sum(1 for _ in os.scandir(sub.path))))
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                out.append((str(f.relative_to(root)), f.stat().st_size))
    return out


def fingerprint(datasets: list[str], root: str | os.PathLike | None = None) -> dict:
    """{"root", "files": {dataset: [[path, size], ...]}, "sha256": {dataset: hex}} of the named
    datasets (a dataset with no files has an empty list: it is missing)."""
    base = data_root(root)
    files = {name: [e for p in PATTERNS.get(name, ()) for e in _entries(base, p)] for name in datasets}
    digests = {name: hashlib.sha256(json.dumps(v).encode()).hexdigest() for name, v in files.items()}
    return {"root": str(base.resolve()), "files": files, "sha256": digests}


def write(out: str | os.PathLike, datasets: list[str], root: str | os.PathLike | None = None) -> dict:
    """Write the fingerprint to `out` (JSON), rewriting it only when its content changes."""
    fp = fingerprint(datasets, root)
    text = json.dumps(fp, indent=1, sort_keys=True) + "\n"
    out = Path(out)
    if not out.is_file() or out.read_text() != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return fp


def main(argv: list[str]) -> None:
    """`python -m dualat.data.fingerprint DATASET OUT`: the fingerprint of every source the
    dataset's stages read under params.yaml's profile (training set, p_ood, the OOD test sets)."""
    from dualat import config

    if len(argv) != 2:
        sys.exit("usage: python -m dualat.data.fingerprint DATASET OUT")
    dataset, out = argv
    try:  # the first stage of `dvc repro`: a wrong key or profile stops the pipeline here, named
        cfg = config.load(dataset=dataset)
    except config.ConfigError as e:
        sys.exit(f"params.yaml: {e}")
    names = dict.fromkeys([dataset, cfg.data.ood, *cfg.evaluate.ood_sets])
    write(out, list(names), cfg.data_root)


if __name__ == "__main__":
    main(sys.argv[1:])
