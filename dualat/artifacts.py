"""Where each pipeline stage keeps its outputs, and the status file through which a stage tells
the stages after it whether it computed them (`not computed: <reason>` otherwise).

Layout (stable paths, no hyperparameters in names; relative to the repository root):
    data/prepared/<dataset>/   status.json, fid_ref/stats.npz (Inception statistics of the
                               training set), fid_ref/features.npz (their features and labels)
    models/<dataset>/<method>/ best*.pt, last.pt, final.pt, history.json, status.json
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dualat import distributed
from dualat.records import NotComputed, atomic_open, dumps_strict


class StageRefused(RuntimeError):
    """A stage stopped before its work without touching its outputs: an input is missing now but
    the outputs hold computed results of an earlier run (kept), or the output folder cannot be
    written. The message is one line naming the folder and what to do."""


def repo_root(start: str | Path = ".") -> Path:
    """The folder holding params.yaml, from `start` upwards (notebooks run from notebooks/)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise FileNotFoundError(f"no params.yaml in {start} or above; open the notebook inside the dualat repository")


def model_dir(dataset: str, method: str) -> Path:
    """The training stage's folder of `method` on `dataset`: models/<dataset>/<method>."""
    return Path("models") / dataset / method


def prepared_dir(dataset: str) -> Path:
    """The prepare stage's folder of `dataset`: data/prepared/<dataset>."""
    return Path("data/prepared") / dataset


def fid_ref_path(dataset: str) -> Path:
    """The cached Inception statistics of the training set (FID reference, A.2)."""
    return prepared_dir(dataset) / "fid_ref" / "stats.npz"


def real_features_path(dataset: str) -> Path:
    """Features and labels of the FID reference images (written by the prepare stage)."""
    return fid_ref_path(dataset).with_name("features.npz")


def write_status(out_dir: str | Path, reason: NotComputed | None, **info: Any) -> dict:
    """out_dir/status.json: {"computed", "reason"} and `info`; returned as a dict."""
    status = {"computed": reason is None, "reason": None if reason is None else reason.reason} | info
    if distributed.is_main():
        with atomic_open(Path(out_dir) / "status.json", "w") as f:
            f.write(dumps_strict(status))
    distributed.barrier()  # under torchrun rank 0 writes; the others go on once it is there
    return status


def read_status(out_dir: str | Path) -> NotComputed | None:
    """None when the stage that wrote out_dir computed its outputs, else its NotComputed."""
    path = Path(out_dir) / "status.json"
    if not path.exists():
        return NotComputed(f"{path} is missing; run its stage first")
    status = json.loads(path.read_text())
    return None if status["computed"] else NotComputed(status["reason"])


def keep_computed(out_dir: str | Path, reason: NotComputed | None) -> None:
    """StageRefused when `reason` (why the stage cannot compute now, e.g. its data folder is not
    mounted) would overwrite out_dir/status.json that says computed: a briefly missing input
    fails the stage and leaves the earlier results as they are. A folder that never held
    computed results gets its "not computed" status as before."""
    if reason is not None and (Path(out_dir) / "status.json").is_file() and read_status(out_dir) is None:
        raise StageRefused(
            f"{reason.reason}; {out_dir} keeps its results of an earlier run: restore what is missing and "
            f"rerun (or delete {Path(out_dir) / 'status.json'} to record it as not computed)"
        )


def check_writable(out_dir: str | Path) -> Path:
    """Create out_dir if needed and write and delete a probe file in it, before any work;
    StageRefused naming the folder when it cannot be written (read-only share, permissions)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-probe.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise StageRefused(f"{out_dir} cannot be written ({e.strerror or e}); make it writable and rerun") from None
    return out_dir
