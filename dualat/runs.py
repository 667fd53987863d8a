"""When a stage may reuse earlier work, and what happens to work it may not reuse.

The rule (docs/resume.md):

* A training run is identified by its *resume key*: the params keys that determine its trajectory
  (`RESUME_KEYS`, the same keys its DVC stage lists in `dvc.yaml`, minus `NOT_TRAJECTORY`), a
  fingerprint of the data files it reads, the sha256 of the checkpoint it starts from (stage 2),
  and a hash of the code that can change a trajectory (`code_hash`, compared as syntax trees, so
  comments, docstrings and formatting do not count). Its rule: every module of the package is
  hashed unless `NOT_TRAINING_CODE` names it, and a module is named there only when nothing it
  does reaches the numbers of a run: presentation, evaluation, progress and file bookkeeping,
  data downloads, data fingerprints (the fingerprint itself is in the key), data locations and
  params parsing (the values are in the key). So a new module is hashed until someone argues
  it out; a log or error message edited in an excluded module retrains nothing. The exclusions
  name modules by their path in the package: "evaluate" is evaluate.py, "reports" the package
  reports/ with every file under it. `hashed_modules` lists what a hash covers.
* `last.pt` with the same key is continued (a finished run is returned as it is, without writing);
  without a readable last.pt, a finished run of the same key whose final.pt and selected
  checkpoints are complete is returned as it is. Any other run in the folder (its key read from
  last.pt, else final.pt or best*.pt) is moved aside whole to `<folder>.superseded/<UTC time>/`,
  with a warning naming each key that differs (old -> new), never overwritten. A run of the
  requested key set aside earlier is then brought back and continued (A -> B -> A); else
  training starts afresh.
* One process trains into a folder at a time: `locked` holds an OS lock on `<folder>.lock`.
* After a NaN/inf stop (`nonfinite.json` in the folder) a run continues across a change of
  `RECOVERY_KEYS` only (a lower learning rate or sampler step): the advice of the error message.

Evaluation records are reused the same way: a record whose key (config, checkpoint sha256, code
hash) equals the current one is returned instead of recomputed (`dualat.evaluation.runner`).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

PACKAGE = Path(__file__).resolve().parent

# Params keys (inside `<profile>.<dataset>`) that decide a training trajectory and its selected
# checkpoints. dvc.yaml lists the same keys (tests/test_faults.py checks that they agree).
RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "standard_at": ("data", "model", "stage1"),
    "ratio": ("data", "model", "stage1", "ratio"),
    # stage 2 also reads the sampler settings of the training-time FID (`fid_reference.sample_fid_fn`)
    "dualat": (
        "data",
        "model",
        "stage2",
        "sample.step_size",
        "sample.steps.dualat",
        "sample.n_samples",
        "sample.batch_size",
        "sample.fid_ref_n",
        "sample.fid_mode",
        "sample.fid_weights",
        "sample.selection_seed",  # which held-out seed images (generate.seed_split) ...
        "sample.n_grid_samples",  # ... and how many are held out
    ),
}
RESUME_KEYS["ablation"] = RESUME_KEYS["dualat"]
# Keys a stage's DVC params may list that cannot change a trajectory: a rerun resumes.
NOT_TRAJECTORY = ("data.workers",)  # the streams are seeded per (seed, epoch, index), not per worker
# Params sections a stage lists that say how it runs, not what it computes: the number of
# processes (docs/gpus.md). Never part of a resume key or an evaluation record's key.
LAUNCH_KEYS = ("compute",)
# What the NaN/inf message advises to change; a run stopped on NaN/inf resumes across these.
RECOVERY_KEYS = ("stage1.optim.lr", "stage2.optim.lr", "stage2.sampler.step_size")
# Modules that cannot change a training trajectory (the rule of the module docstring), by their
# path in the package without ".py" (see `excluded`): "reports" and "evaluation" are whole folders.
NOT_TRAINING_CODE = (
    "artifacts",  # stage folders and status files
    "checkpoint",  # how a checkpoint is written and read, not what it holds
    "code_hashes",  # writes the hashes of the code kinds for dvc.yaml
    "config",  # params parsing and its messages: the values themselves are in the key
    "data/download",  # fetching files; what was fetched is in the data fingerprint
    "data/fingerprint",  # the fingerprint stage; the fingerprint is in the key
    "data/paths",  # where data lives and its error messages; the files read are fingerprinted
    "evaluation",
    "explore",
    "metrics/calibration",  # evaluation-only metrics (training evaluates with metrics/accuracy
    "metrics/ood",  # and, for FID selection, metrics/generative)
    "metrics/robust",
    "paper_values",
    "preflight",  # checks before training; it stops a stage or lets it run, it computes nothing of it
    "progress",
    "protocol",  # the FID protocol / threat model strings of records and reports
    "proxy",  # "proxy" and "proxy_eval" drive the GPU chain and its evaluation; no pipeline stage
    "proxy_eval",  # imports them
    "records",
    "released",  # which released file is evaluated (its sha256 is in every record's key)
    "reports",
    "runs",
    "views",
)
# Modules that cannot change an evaluation's numbers.
NOT_EVALUATION_CODE = (
    "explore", "paper_values", "progress", "proxy", "proxy_eval", "released", "reports", "runs", "views",
)  # fmt: skip


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{key}.")
        else:
            out[key] = v
    return out


def select(config: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    """The flattened entries of `config` under each dotted key of `keys`, minus NOT_TRAJECTORY."""
    flat = flatten(config)
    return {
        k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in keys) and k not in NOT_TRAJECTORY
    }


def _code_digest(src: str) -> str:
    """Hash of a module's syntax tree without docstrings: comments and formatting do not count."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _module_path(entry: str) -> str:
    """An exclusion entry as a module path: "reports/", "reports.py" and "reports" all read "reports"."""
    entry = entry.strip("/")
    return entry[: -len(".py")] if entry.endswith(".py") else entry


def excluded(relative: PurePosixPath, exclude: tuple[str, ...]) -> bool:
    """Whether the file at `relative` (a path inside the package) belongs to a module of `exclude`.

    An entry is a module's path in the package without ".py" ("evaluate", "metrics/ood"): it
    covers the file evaluate.py, or, for a package, its folder with every file under it
    ("reports" covers reports/__init__.py and reports/tables.py). A trailing "/" or ".py" is
    allowed. Entries are paths, not file names: "runs" does not exclude a metrics/runs.py.
    """
    module = relative.with_suffix("").as_posix()
    return any(module == m or module.startswith(m + "/") for m in map(_module_path, exclude))


def hashed_modules(exclude: tuple[str, ...] = NOT_TRAINING_CODE) -> list[PurePosixPath]:
    """The files `code_hash(exclude)` covers, as paths inside the package, sorted: every module
    of the package minus the modules of `exclude` (see `excluded`)."""
    files = (PurePosixPath(path.relative_to(PACKAGE).as_posix()) for path in PACKAGE.rglob("*.py"))
    return sorted(f for f in files if not excluded(f, exclude))


def code_hash(exclude: tuple[str, ...] = NOT_TRAINING_CODE) -> str:
    """sha256 over the syntax trees of `hashed_modules(exclude)` and their paths."""
    h = hashlib.sha256()
    for relative in hashed_modules(exclude):
        h.update(str(relative).encode())
        h.update(_code_digest((PACKAGE / relative).read_text()).encode())
    return h.hexdigest()


def imported_files(start: list[Path], package: Path | None = None) -> set[Path]:
    """The package's .py files that `start` imports, directly or through each other (a static
    reading of every import statement, also inside functions; a package's __init__ counts)."""
    package = package or PACKAGE
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != package.name:
                    continue
                for i in range(2, len(parts) + 1):  # dualat.a.b imports dualat/a/__init__.py too
                    folder = package.joinpath(*parts[1:i])
                    todo += [p for p in (folder / "__init__.py", folder.with_suffix(".py")) if p.is_file()]
    return seen


def evaluation_code_exclusions() -> tuple[str, ...]:
    """What the evaluation-code hash leaves out: every module that dualat/evaluation/ does not
    import (statically, transitively), and NOT_EVALUATION_CODE."""
    used = imported_files(sorted((PACKAGE / "evaluation").glob("*.py")))
    others = sorted(p.relative_to(PACKAGE).with_suffix("").as_posix() for p in PACKAGE.rglob("*.py") if p not in used)
    return tuple(others) + NOT_EVALUATION_CODE


def resume_key(config: dict, keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The identity of a run: the selected config entries, the training code hash and `extra`
    (e.g. data fingerprint, init checkpoint sha256)."""
    return select(config, keys) | {"code": code_hash()} | {k: v for k, v in extra.items() if v is not None}


def differences(old: dict, new: dict) -> list[str]:
    """Lines "key: old -> new" for every key whose value differs (a missing key reads <absent>)."""
    lines = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if a != b:
            lines.append(f"{k}: {a!r} -> {b!r}")
    return lines


def recoverable(old: dict, new: dict) -> bool:
    """True when `old` and `new` differ in RECOVERY_KEYS only."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    return bool(changed) and changed <= set(RECOVERY_KEYS)


def run_files(out_dir: Path) -> list[Path]:
    """The files of a training run in `out_dir` (checkpoints, history, NaN/inf note); status.json
    alone is no run."""
    names = ("*.pt", "history.json", "curves.json", "nonfinite.json")
    return sorted(p for pattern in names for p in Path(out_dir).glob(pattern)) if Path(out_dir).is_dir() else []


def superseded(out_dir: Path) -> Path:
    """The folder that keeps the runs set aside from `out_dir`."""
    return out_dir.parent / f"{out_dir.name}.superseded"


def bring_back(out_dir: Path, ours: Callable[[Path], bool]) -> Path | None:
    """A -> B -> A: move the newest run set aside from `out_dir` that `ours` accepts (a run of
    the requested key) back into `out_dir`, which holds no run, and warn; None when there is none."""
    root = superseded(out_dir)
    for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        if not folder.is_dir() or not ours(folder):
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        (folder / "why.txt").unlink(missing_ok=True)
        for item in sorted(folder.iterdir()):
            shutil.move(str(item), out_dir / item.name)
        folder.rmdir()
        warnings.warn(
            f"{out_dir}: the run of these settings set aside at {folder} is brought back instead of trained again",
            stacklevel=3,
        )
        return folder
    return None


class RunLocked(RuntimeError):
    """Another process trains into the same folder."""


_HELD: set[Path] = set()  # the lock files this process holds
LOCK_ENV = "DUALAT_RUN_LOCK"  # the lock file a parent process holds for the processes it starts


def lock_path(out_dir: Path) -> Path:
    """The lock file of a run folder: beside it (`<folder>.lock`, next to `<folder>.superseded`),
    so that it is no part of the folder DVC hashes and is not moved when the run is set aside."""
    return out_dir.parent / f"{out_dir.name}.lock"


@contextlib.contextmanager
def locked(out_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive OS lock (flock) on `out_dir`'s lock file while training into it, or
    raise RunLocked naming the folder and the holder's pid. The OS drops the lock when its
    process ends, however it ends, so a killed run never blocks the next one. Nested blocks of
    one process share the lock, and so do the processes it starts while holding it (a launcher
    and its torchrun ranks: `LOCK_ENV` names the held lock file in their environment)."""
    path = lock_path(Path(out_dir).resolve())
    if path in _HELD or os.environ.get(LOCK_ENV) == str(path):
        yield path  # already held here or by the process that started this one
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunLocked(
                f"{out_dir} is being trained by another process (pid {holder}; lock {path}). Two trainings of one "
                "folder would set each other's runs aside: wait for it to end, or stop it, then rerun."
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        _HELD.add(path)
        outer = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = str(path)
        try:
            yield path
        finally:
            _HELD.discard(path)
            if outer is None:
                del os.environ[LOCK_ENV]
            else:
                os.environ[LOCK_ENV] = outer
            f.truncate(0)  # an empty file when nobody trains; closing the file drops the lock


def set_aside(out_dir: Path, diff: list[str]) -> Path:
    """Move every file of `out_dir` to `<out_dir>.superseded/<UTC time>/` (with why.txt) and warn."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = superseded(out_dir) / stamp
    target.mkdir(parents=True)
    for item in sorted(out_dir.iterdir()):
        shutil.move(str(item), target / item.name)
    (target / "why.txt").write_text("why the run was set aside (old -> new):\n" + "\n".join(diff) + "\n")
    warnings.warn(
        f"{out_dir} holds a run of other settings or one that cannot be continued; moved whole to {target}; "
        "training starts afresh unless a run of these settings was set aside before. "
        "Differences (old -> new): " + "; ".join(diff),
        stacklevel=3,
    )
    return target
