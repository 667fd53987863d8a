"""Reading the records the pipeline wrote (results/<dataset>/<method>/<group>/<group>.json and
models/.../history.json), and turning their values into table cells.

A value that was not computed is a `NotComputed` (or, inside a record, a "not computed: <reason>"
string); every reader here hands it on instead of raising, so a table shows why a cell is empty.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from dualat.records import NotComputed

# Folders relative to the working directory (the repository root when DVC or a notebook runs).
REPORTS = Path("reports")
RESULTS = Path("results")
MODELS = Path("models")


def record_path(dataset: str, method: str, group: str) -> Path:
    """results/<dataset>/<method>/<group>/<group>.json."""
    return RESULTS / dataset / method / group / f"{group}.json"


def record(dataset: str, method: str, group: str) -> dict | NotComputed:
    """The metrics of results/<dataset>/<method>/<group>/<group>.json, or NotComputed."""
    path = record_path(dataset, method, group)
    if not path.exists():
        return NotComputed(f"{path} was not produced")
    return json.loads(path.read_text())["metrics"]


def record_full(dataset: str, method: str, group: str) -> dict:
    """The whole record (metrics, config, checkpoint, extra, ...); {} when it is missing."""
    path = record_path(dataset, method, group)
    return json.loads(path.read_text()) if path.exists() else {}


def record_extra(dataset: str, method: str, group: str) -> dict:
    """The `extra` block of a record ({} when the record is missing)."""
    return record_full(dataset, method, group).get("extra", {})


def _not_computed_text(tree: Any) -> NotComputed | None:
    if isinstance(tree, str) and tree.startswith("not computed"):
        return NotComputed(tree.split(":", 1)[1].strip())
    return None


def value(tree: Any, *keys: str) -> Any:
    """tree[k1][k2]...; a `not computed: ...` string or NotComputed anywhere on the way wins."""
    for key in keys:
        if isinstance(tree, NotComputed):
            return tree
        if (missing := _not_computed_text(tree)) is not None:
            return missing
        if not isinstance(tree, dict) or key not in tree:
            return NotComputed(f"no value {'.'.join(keys)} in the record")
        tree = tree[key]
    missing = _not_computed_text(tree)
    return tree if missing is None else missing


def is_number(v: Any) -> bool:
    """A finite-or-infinite int/float that is not a bool and not NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def percent(v: Any) -> Any:
    """A fraction as a percentage; anything else (NotComputed, None) as it is."""
    return v * 100 if is_number(v) else v


def scaled(v: Any, factor: float) -> Any:
    """v * factor for a number; anything else as it is."""
    return v * factor if is_number(v) else v


def cell_text(v: Any) -> str:
    """Display text of one table cell: 4 significant digits, "–" for no value."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def short_reason(reason: str) -> str:
    """A few words for a table cell; the full reason goes in the table's footnote."""
    text = reason.strip()
    if text.startswith("no value") and text.endswith("in the record"):
        return "not in this record"
    if text.endswith("was not produced"):
        return "record missing"
    if "data not found" in text:
        return f"{text.split(':', 1)[0]} data missing"
    for sep in (" (", ";", ":", ". "):
        text = text.split(sep, 1)[0]
    return text if len(text) <= 40 else text[:37] + "..."


def reason_note(reason: str) -> str:
    """A footnote of a not-computed reason: its short reason (the code in the cell) and one
    sentence; the full reason stays in the record."""
    code, text = short_reason(reason), reason.strip()
    if "data not found" in text:
        sentence = "its files were not found under the data root of this machine (see docs/data.md)"
    elif text.endswith("was not produced"):
        sentence = f"{text}: its stage has not run"
    elif code == "not in this record":
        sentence = f"the record has {text.split(' in the record')[0]} (written by another version or group)"
    else:
        sentence = re.sub(r" ?\(tried [^)]*\)", "", text).split("; ")[0].split(". ")[0]
    sentence = sentence if len(sentence) <= 200 else sentence[:197] + "..."
    return f"{code}: {sentence}."


def history(folder: Path) -> list[dict] | NotComputed:
    """The evaluation history of a training folder (history.json), or why there is none
    (status.json's reason when the stage did not compute, else that the file is missing)."""
    path = folder / "history.json"
    status = folder / "status.json"
    if status.exists() and not json.loads(status.read_text())["computed"]:
        return NotComputed(json.loads(status.read_text())["reason"])
    if not path.exists():
        return NotComputed(f"{path} was not produced")
    return json.loads(path.read_text())
