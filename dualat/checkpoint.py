"""Atomic checkpoints: one dict {model, ema, optimizer, step, config, git_rev, versions, ...}
written to a temporary file in the target folder and renamed over the target, so a kill at any
moment leaves either the old or the new file, never a torn one.

Every file is read with `torch.load(weights_only=True)`: tensors, numbers, strings and plain
containers only, so nothing in a file is executed (a pickle that would call a function on load
is refused with `CheckpointError`). The project's own checkpoints hold nothing else; `SAFE_GLOBALS`
lists the one class that files written before this rule may hold.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from dualat.records import atomic_open, git_revision, library_versions

__all__ = ["CheckpointError", "CheckpointMissing", "git_revision", "library_versions", "load", "save"]

# Earlier checkpoints stored torch.__version__ (a str subclass) in "versions"; it holds no code.
SAFE_GLOBALS = [TorchVersion]
_ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6 (a zip archive)
_PICKLE = b"\x80"  # the legacy format: a pickle stream (protocol >= 2)


class CheckpointError(ValueError):
    """A checkpoint file that does not exist, is not a PyTorch checkpoint, is damaged, holds
    objects that could run code when loaded, or holds another model than params.yaml asks for.
    The message is one line naming the file."""


class CheckpointMissing(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (a FileNotFoundError too)."""


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` with torch.save to `path` atomically (temp file + fsync + rename)."""
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load(
    path: str | Path, map_location: str | torch.device = "cpu", *, source: str | None = None, mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True (see the module docstring).

    `source` says where the file name came from, e.g. "evaluate.checkpoints.dualat" for a user's
    file; None for the pipeline's own files, whose errors advise rerunning the stage that wrote
    them. `mmap` maps the tensors instead of reading them (a cheap look at shapes; zip files only).
    Raises CheckpointError with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        where = f" ({source})" if source else "; run the stage that writes it first (dvc repro)"
        raise CheckpointMissing(f"{path} does not exist{where}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(_ZIP) or head.startswith(_PICKLE)):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and head == _ZIP)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_refused(path, str(e))) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:  # truncated or damaged
        advice = "download or copy it again" if source else "delete it and rerun its stage"
        raise CheckpointError(f"{path}: damaged or truncated PyTorch checkpoint; {advice}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors (a state dict)")
    return state


def _refused(path: Path, error: str) -> str:
    """One line for a file the weights-only unpickler refused: the global it would have loaded."""
    found = re.search(r"GLOBAL ([\w.]+)", error)
    if found is None:
        return f"{path}: not a PyTorch checkpoint (unreadable pickle)"
    return (
        f"{path}: refused, it holds Python objects ({found.group(1)}) that could run code when loaded; "
        "only tensors, numbers, strings and plain containers are accepted (save a state_dict)"
    )
