"""Where the pipeline's time goes: one row per executed notebook, from papermill's metadata.

usage: python scripts/stage_times.py [FOLDER]   (default reports/notebooks)

papermill records the start, end and duration of the run and of each cell in the executed
notebook; scripts/nb.py adds its own share (metadata "nb_py"). Columns, in seconds of wall time:

  run       the whole `nb.py` call after Python's start (imports + papermill + html), or
            papermill's duration for a notebook run otherwise
  imports   nb.py importing papermill and nbconvert
  kernel    papermill's start to the first cell's start: the kernel's launch
  cells     the cells' total; `first` the first code cell after the parameters (imports,
            config, and in most notebooks the stage's call)
  close     papermill's rest: saving, the kernel's shutdown
  html      the HTML export

The last lines sum each column per notebook kind and overall.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import nbformat


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def times(path: Path) -> dict:
    """The columns above for one executed notebook (None where nothing was recorded), with
    "slowest" (seconds), "slowest_cell" (its last line) and "status"."""
    nb = nbformat.read(path, as_version=4)
    run, own = nb.metadata.get("papermill", {}), nb.metadata.get("nb_py", {}).get("seconds", {})
    code = [c for c in nb.cells if c.cell_type == "code" and "papermill" in c.metadata]
    cells = [c.metadata.papermill.get("duration") or 0.0 for c in code]
    first_start = next((c.metadata.papermill.get("start_time") for c in code), None)
    params = ("parameters", "injected-parameters")
    body = [i for i, c in enumerate(code) if not set(params) & set(c.metadata.get("tags", []))]
    slowest = max(range(len(code)), key=lambda i: cells[i], default=None)
    kernel = _seconds(run.get("start_time"), first_start)
    duration = run.get("duration")
    return {
        "run": sum(own.values()) if own else duration,
        "imports": own.get("startup"),
        "kernel": kernel,
        "cells": sum(cells),
        "first": cells[body[0]] if body else None,
        "close": duration - kernel - sum(cells) if duration is not None and kernel is not None else None,
        "html": own.get("html"),
        "slowest": cells[slowest] if slowest is not None else None,
        "slowest_cell": code[slowest].source.strip().splitlines()[-1][:48] if slowest is not None else "",
        "status": "failed" if run.get("exception") else "ok",
    }


def _cell(v: float | None) -> str:
    return f"{v:8.1f}" if isinstance(v, (int, float)) else f"{'-':>8}"


COLUMNS = ("run", "imports", "kernel", "cells", "first", "close", "html")


def table(folder: Path) -> str:
    """The per-notebook table, slowest first, then the sums per notebook kind and overall."""
    rows = {p.stem: times(p) for p in sorted(folder.glob("*.ipynb"))}
    if not rows:
        return f"no executed notebooks in {folder} (run `dvc repro` first)"
    width = max(len(n) for n in rows)
    head = f"{'notebook':<{width}} " + "".join(f"{c:>8}" for c in COLUMNS) + "  slowest cell (s)"
    lines = [head, "-" * len(head)]
    for name, t in sorted(rows.items(), key=lambda kv: -(kv[1]["run"] or 0)):
        flag = "" if t["status"] == "ok" else "  FAILED"
        slow = f"  {t['slowest']:.1f} {t['slowest_cell']}" if t["slowest"] is not None else ""
        lines.append(f"{name:<{width}} " + "".join(_cell(t[c]) for c in COLUMNS) + slow + flag)
    kinds: dict[str, list[dict]] = defaultdict(list)
    for name, t in rows.items():
        kinds[name.split("-")[0]].append(t)
    lines.append("-" * len(head))
    for kind, ts in sorted(kinds.items()):
        sums = [sum(t[c] or 0 for t in ts) for c in COLUMNS]
        lines.append(f"{f'{kind} (x{len(ts)})':<{width}} " + "".join(_cell(s) for s in sums))
    sums = [sum(t[c] or 0 for t in rows.values()) for c in COLUMNS]
    lines.append(f"{f'all (x{len(rows)})':<{width}} " + "".join(_cell(s) for s in sums))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/notebooks")))
