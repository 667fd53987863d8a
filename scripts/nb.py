"""Run one pipeline notebook with papermill and export it to HTML, in one process.

usage: python scripts/nb.py NOTEBOOK TAG [NAME=VALUE ...]
  executes notebooks/NOTEBOOK.ipynb with the parameters NAME=VALUE (strings) and writes
  reports/notebooks/NOTEBOOK[-TAG].ipynb and .html
"""

import os
import sys
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

# The project's errors about what a user gave or has to fix (dualat.config.ConfigError,
# dualat.data.DataError and DataMissingError, dualat.checkpoint.CheckpointError, ...): their
# message names the key or file and what to do, so a failed cell prints only that, not the
# notebook's traceback. Any other error keeps its traceback. tests/test_checkpoints.py checks the names.
USER_ERRORS = (
    "ConfigError",
    "DataError",
    "DataMissingError",
    "TooFewImages",
    "CheckpointError",
    "CheckpointMissing",
    "StageRefused",
    "NonFiniteLoss",
    "DownloadFailed",
)


def main(argv: list[str]) -> None:
    name, tag, *pairs = argv
    bad = [p for p in pairs if "=" not in p]
    if bad:
        sys.exit(f"nb.py: parameters are NAME=VALUE, got {bad[0]!r}")
    params = dict(p.split("=", 1) for p in pairs)
    known = papermill.inspect_notebook(f"notebooks/{name}.ipynb")  # the parameters cell's names
    unknown = sorted(set(params) - set(known))
    if unknown:  # papermill would only warn and run with the defaults
        sys.exit(f"nb.py: notebooks/{name}.ipynb has no parameter {unknown[0]!r} (its parameters: {', '.join(known)})")
    out = Path("reports/notebooks") / (f"{name}-{tag}" if tag else name)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this: loops record a few lines, not a live bar (dualat.progress)
    os.environ.setdefault("DUALAT_PROGRESS", "lines")
    try:
        papermill.execute_notebook(
            f"notebooks/{name}.ipynb", f"{out}.ipynb", parameters=params, kernel_name="python3", progress_bar=False
        )
    except PapermillExecutionError as err:
        if err.ename in USER_ERRORS:  # the executed notebook keeps the traceback
            sys.exit(f"{out}.ipynb: {err.evalue}")
        raise
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(f"{out}.ipynb", as_version=4))
    out.with_suffix(".html").write_text(body)


if __name__ == "__main__":
    main(sys.argv[1:])
