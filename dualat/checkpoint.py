"""Atomic checkpoints: one dict {model, ema, optimizer, step, config, git_rev, versions, ...}
written to a temporary file in the target folder and renamed over the target, so a kill at any
moment leaves either the old or the new file, never a torn one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dualat.records import atomic_open, git_revision, library_versions

__all__ = ["git_revision", "library_versions", "load", "save"]


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` with torch.save to `path` atomically (temp file + fsync + rename)."""
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save`; a clear error names a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found; run the stage that writes it first (dvc repro)")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise RuntimeError(f"checkpoint {path} could not be read ({e}); delete it and rerun its stage") from e
