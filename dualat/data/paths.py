"""Where data lives, and the errors raised when it is not there or is wrong. Standard library only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV = "DUALAT_DATA"  # environment variable naming the data folder
DEFAULT_ROOT = Path("data/raw")  # relative to the working directory (the project root)

PathLike = str | os.PathLike[str]
# A data root: one folder, several searched in order, or None for the configured ones (data_roots)
Roots = PathLike | Sequence[PathLike] | None


def data_root(root: PathLike | None = None) -> Path:
    """The data folder: `root` if given and non-empty, else $DUALAT_DATA if set, else data/raw."""
    if root is not None and str(root) != "":
        return Path(root)
    env = os.environ.get(DATA_ENV, "")
    return Path(env) if env else DEFAULT_ROOT


def data_roots(root: Roots = None) -> list[Path]:
    """The folders searched for a dataset, in order; the last one is where downloads go.

    A given `root` (non-empty) is searched alone; a sequence of folders in its order. With none
    given: $DUALAT_DATA (a read-only copy such as the project's offline shards) if set, then
    data/raw/, the folder downloads fill (docs/data.md).
    """
    if isinstance(root, (str, os.PathLike)) or root is None:
        if root is not None and str(root) != "":
            return [Path(root)]
        env = os.environ.get(DATA_ENV, "")
        return [Path(env), DEFAULT_ROOT] if env and Path(env) != DEFAULT_ROOT else [DEFAULT_ROOT]
    roots = list(dict.fromkeys(Path(r) for r in root))
    if not roots:
        raise ValueError("root: an empty list of data folders")
    return roots


def download_root(root: Roots = None) -> Path:
    """The folder downloads go into: the last of data_roots(root) (data/raw unless a root is given)."""
    return data_roots(root)[-1]


def roots_text(roots: Sequence[Path]) -> str:
    """The folders for a message: "A" or "A or B"."""
    return " or ".join(str(r) for r in roots)


class DataMissingError(FileNotFoundError):
    """A dataset's files were not found (or were rejected). Never answered with random data.

    The message names the dataset, lists every path tried and says how to obtain the data.
    """

    def __init__(self, dataset: str, tried: Sequence[str | os.PathLike[str]], how: str) -> None:
        self.dataset = dataset
        self.tried = [str(p) for p in tried]
        self.how = how
        lines = [f"{dataset}: data not found. Tried:"]
        lines += [f"  - {p}" for p in self.tried]
        lines += [
            f"To obtain it: {how}",
            f"Or pass root=... or set the environment variable {DATA_ENV} to a folder holding it.",
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keeps the 3-argument constructor picklable
        return type(self), (self.dataset, self.tried, self.how)


class DataError(ValueError):
    """Data files that are present but wrong (corrupt, truncated, mislabelled, another image size
    or class count than the config says, fewer images than asked for). Never trained on.

    The message names the file (or the config key) at fault and says what to do about it.
    """
