"""Evaluation records: one JSON file per evaluation, written atomically.

A record holds the metrics, the config that produced them, the checkpoint (path + sha256), the
git revision and library versions. A value that could not be computed is a `NotComputed`, which
serialises as the string ``"not computed: <reason>"`` and is read back as a `NotComputed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

_NOT_COMPUTED_PREFIX = "not computed: "


@dataclasses.dataclass(frozen=True)
class NotComputed:
    """A metric that could not be computed, with the reason why."""

    reason: str

    def __str__(self) -> str:
        return f"{_NOT_COMPUTED_PREFIX}{self.reason}"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path`; on a clean exit rename it onto `path`.

    A reader never sees a half-written file, and a killed writer leaves the old file intact.
    `mode` is "w" (text) or "wb" (binary).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _remove_orphans(path)


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of `path` left by writers that were killed (see `atomic_open`).

    Only one process writes a given path (rank 0 under torchrun), so after its own successful
    write every other `.<name>.*.tmp` beside it is an orphan."""
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            orphan.unlink()


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, computed once per (path, size, mtime) in this process
    (checkpoints, data shards and weights files are hashed by several callers)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


# Tracked files `dvc repro` itself rewrites: a run that changed only these is still at its commit.
PIPELINE_OUTPUTS = ("dvc.lock", "reports/metrics.json")
# DVC adds each stage output to the .gitignore of its folder under these.
PIPELINE_FOLDERS = ("data/", "models/", "reports/", "results/")


def _git(cwd: Path, *args: str) -> str:
    # --no-optional-locks: `status` must not refresh (write) the index.
    out = subprocess.run(
        ["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout


def _pipeline_output(path: str) -> bool:
    return path in PIPELINE_OUTPUTS or (path.endswith("/.gitignore") and path.startswith(PIPELINE_FOLDERS))


def git_changes(cwd: str | os.PathLike | None = None) -> list[str] | None:
    """Tracked files that differ from HEAD (relative to the repository root), leaving out what
    the pipeline itself rewrites (`PIPELINE_OUTPUTS`, DVC's .gitignore files); None outside git."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    # porcelain v1: "XY path" or "XY old -> new"; the leading space of X is significant
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if len(line) > 3]
    return sorted(p for p in paths if not _pipeline_output(p))


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """`git rev-parse HEAD` of the repository holding `cwd` (default: this package).

    Appends "-dirty" when tracked files other than the pipeline's own outputs differ from HEAD
    (`git_changes` names them); returns "unknown" outside git, without commits, or when git is
    missing. Never raises; never writes to the repository.
    """
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        rev = _git(cwd, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if git_changes(cwd) else "")


def revision_text(cwd: str | os.PathLike | None = None, shown: int = 5) -> str:
    """The revision and what differs from its commit, for the report: "<rev>" or
    "<rev>-dirty (differs from the commit in: a.py, b.py)"."""
    rev, changes = git_revision(cwd), git_changes(cwd) or []
    if not changes:
        return rev
    more = f" and {len(changes) - shown} more" if len(changes) > shown else ""
    return f"{rev} (differs from the commit in: {', '.join(changes[:shown])}{more})"


def library_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, numpy."""
    try:  # the installed version without importing it (~1.3 s); records are written without torchvision too
        tv = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        tv = "not installed"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a plain str: checkpoints load with weights_only
        "torchvision": tv,
        "numpy": np.__version__,
    }


def to_jsonable(obj: Any) -> Any:
    """Convert `obj` recursively into plain JSON types.

    NotComputed -> its string; numpy/torch scalars -> Python numbers; arrays/tensors -> lists;
    dataclasses -> dicts; paths -> strings; mapping keys -> strings; NaN and +-inf -> None
    (strict JSON has no such numbers).
    """
    if isinstance(obj, NotComputed):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON: {obj!r}")


def dumps_strict(obj: Any) -> str:
    """`obj` as strict JSON text (via `to_jsonable`; never `NaN` or `Infinity`)."""
    return json.dumps(to_jsonable(obj), indent=1, allow_nan=False)


def _from_json(obj: Any) -> Any:
    """Inverse of the NotComputed part of `to_jsonable`."""
    if isinstance(obj, str) and obj.startswith(_NOT_COMPUTED_PREFIX):
        return NotComputed(obj[len(_NOT_COMPUTED_PREFIX) :])
    if isinstance(obj, dict):
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def write_record(
    path: str | os.PathLike,
    metrics: Mapping[str, Any],
    *,
    config: Any,
    checkpoint: str | os.PathLike | None,
    extra: Mapping[str, Any] | None = None,
    wall_seconds: float | None = None,
) -> dict:
    """Write an evaluation record as JSON (atomically) and return what was written.

    Keys: metrics, config, checkpoint ({path, sha256} or None), git_rev, git_changes (tracked
    files that differ from that commit, pipeline outputs left out), versions, created
    (UTC ISO time), and wall_seconds / extra when given. `config` may be a dict or a dataclass.
    """
    ckpt = None
    if checkpoint is not None:
        digest = (
            sha256_file(checkpoint)
            if Path(checkpoint).is_file()
            else NotComputed(f"checkpoint file not found: {checkpoint}")
        )
        ckpt = {"path": os.fspath(checkpoint), "sha256": digest}
    record: dict[str, Any] = {
        "metrics": metrics,
        "config": config,
        "checkpoint": ckpt,
        "git_rev": git_revision(),
        "git_changes": git_changes(),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if wall_seconds is not None:
        record["wall_seconds"] = float(wall_seconds)
    if extra is not None:
        record["extra"] = extra
    record = to_jsonable(record)
    with atomic_open(path, "w") as f:
        json.dump(record, f, indent=2, allow_nan=False)
        f.write("\n")
    return record


def read_record(path: str | os.PathLike) -> dict:
    """Read a record written by `write_record`; "not computed: ..." strings become NotComputed."""
    with open(path) as f:
        return _from_json(json.load(f))
