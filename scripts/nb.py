"""Run one pipeline notebook with papermill and export it to HTML, in one process.

usage: python scripts/nb.py NOTEBOOK TAG [NAME=VALUE ...]
  executes notebooks/NOTEBOOK.ipynb with the parameters NAME=VALUE (strings) and writes
  reports/notebooks/NOTEBOOK[-TAG].ipynb and .html
"""

import os
import sys
import time
from pathlib import Path

T0 = time.time()
# jsonschema (under nbformat) imports rfc3987_syntax when it is installed, which builds a grammar
# at import: about 1.5 s of CPU per notebook, for a URI format the notebook schema never uses.
# Marked absent, jsonschema skips that one format checker (scripts/stage_times.py shows the times).
sys.modules.setdefault("rfc3987_syntax", None)

import nbformat  # noqa: E402
import papermill  # noqa: E402
from nbconvert import HTMLExporter  # noqa: E402


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
    started = time.time()
    papermill.execute_notebook(
        f"notebooks/{name}.ipynb", f"{out}.ipynb", parameters=params, kernel_name="python3", progress_bar=False,
        shutdown_kernel="immediate",  # every cell has finished and its outputs are in: no graceful wait
    )  # fmt: skip
    executed = time.time()
    nb = nbformat.read(f"{out}.ipynb", as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out.with_suffix(".html").write_text(body)
    # this process's share, beside papermill's own times (scripts/stage_times.py reads both)
    seconds = {"startup": started - T0, "papermill": executed - started, "html": time.time() - executed}
    nb.metadata["nb_py"] = {"seconds": {k: round(v, 3) for k, v in seconds.items()}}
    nbformat.write(nb, f"{out}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
