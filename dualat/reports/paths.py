"""No machine paths in the report: a path inside the repository is shown relative to its root,
any other absolute path by its file name (records keep the full paths; the report links them)."""

from __future__ import annotations

import re
from pathlib import Path

# An absolute POSIX path: "/" + at least one folder, not inside a URL ("https://...") or a word.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$])/(?:[\w.+@-]+/)+([\w.+@-]*)")


def public_text(text: str, root: str | Path | None = None) -> str:
    """`text` with every absolute path made relative to `root` (default: the working directory,
    the repository root when DVC or a notebook runs) or, outside it, cut to its file name."""
    root = str(Path(root or Path.cwd()).resolve())
    text = text.replace(root + "/", "").replace(root, ".")
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def write_public(path: Path, text: str) -> Path:
    """Write a report file with `public_text` applied; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(public_text(text))
    return path
