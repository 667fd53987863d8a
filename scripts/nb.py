"""Run one pipeline notebook with papermill and export it to HTML, in one process.

usage: python scripts/nb.py NOTEBOOK TAG [NAME=VALUE ...]
  executes notebooks/NOTEBOOK.ipynb with the parameters NAME=VALUE (strings) and writes
  reports/notebooks/NOTEBOOK[-TAG].ipynb and .html, with no machine path in either (paths in
  the repository relative to its root, the data root as $DUALAT_DATA, the Python environment as
  $PYTHON_ENV, the home folder as ~).
"""

import contextlib
import os
import signal
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
import psutil  # noqa: E402
from nbconvert import HTMLExporter  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402

# Kernel settings: silence ipykernel's TCP notice, printed once per stage (scripts/ipykernel_config.py).
KERNEL_CONFIG = Path(__file__).with_name("ipykernel_config.py")


def machine_prefixes() -> list[tuple[str, str]]:
    """(absolute folder + "/", what the report shows instead), the repository root first."""
    pairs = [(Path.cwd().resolve(), "")]
    if os.environ.get("DUALAT_DATA"):
        pairs.append((Path(os.environ["DUALAT_DATA"]).resolve(), "$DUALAT_DATA/"))
    pairs += [(Path(sys.prefix), "$PYTHON_ENV/"), (Path(sys.base_prefix), "$PYTHON/"), (Path.home(), "~/")]
    return [(f"{folder}/", shown) for folder, shown in pairs if folder != Path("/")]


def without_machine_paths(text: str) -> str:
    """`text` with every folder of `machine_prefixes` replaced (tracebacks, warnings, reasons)."""
    for prefix, shown in machine_prefixes():
        text = text.replace(prefix, shown)
    return text


def publish(out: Path, seconds: dict | None = None, since: float | None = None) -> None:
    """The executed notebook out.ipynb without machine paths, and its HTML export out.html;
    `seconds` (nb.py's own times) go into the notebook's metadata, with the HTML export's."""
    executed = Path(f"{out}.ipynb")
    nb = nbformat.reads(without_machine_paths(executed.read_text()), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out.with_suffix(".html").write_text(without_machine_paths(body))
    if seconds is not None:
        seconds["html"] = time.time() - (since or time.time())
        nb.metadata["nb_py"] = {"seconds": {k: round(v, 3) for k, v in seconds.items()}}
    nbformat.write(nb, executed)


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
    "RunLocked",
    "DownloadFailed",
)

GRACE_S = 2.0  # after Ctrl-C, how long the kernel may take to stop before it is killed


def stop_on_ctrl_c(notebook: str) -> None:
    """Make Ctrl-C end this run at once, whatever papermill does with a KeyboardInterrupt: the
    kernel runs in its own session (the terminal's Ctrl-C does not reach it), so it is sent
    SIGINT here (training code stops with KeyboardInterrupt; checkpoints are written atomically),
    killed with its data-loader workers after GRACE_S, and nb.py exits 130 with one line. An
    inherited "ignore SIGINT" (a background job) is kept."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def stop(signum, frame):
        kernels = psutil.Process().children()
        for sig in (signal.SIGINT, signal.SIGKILL):
            for kernel in kernels:
                try:
                    os.killpg(kernel.pid, sig)  # the kernel leads its own process group (jupyter_client)
                except OSError:
                    with contextlib.suppress(psutil.Error):
                        kernel.send_signal(sig)
            if sig == signal.SIGINT:
                _, kernels = psutil.wait_procs(kernels, timeout=GRACE_S)
        print(
            f"nb.py: interrupted (Ctrl-C); {notebook} stopped. A training stage resumes from its last.pt.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(130)

    signal.signal(signal.SIGINT, stop)


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
    stop_on_ctrl_c(f"notebooks/{name}.ipynb")
    started = time.time()
    try:
        papermill.execute_notebook(
            f"notebooks/{name}.ipynb", f"{out}.ipynb", parameters=params, kernel_name="python3", progress_bar=False,
            extra_arguments=[f"--config={KERNEL_CONFIG}"],
            shutdown_kernel="immediate",  # every cell has finished and its outputs are in: no graceful wait
        )  # fmt: skip
    except PapermillExecutionError as err:
        if Path(f"{out}.ipynb").exists():
            publish(out)  # the failed notebook too, without machine paths
        if err.ename in USER_ERRORS:  # the executed notebook keeps the traceback
            sys.exit(f"{out}.ipynb: {err.evalue}")
        raise
    executed = time.time()
    # this process's share, beside papermill's own times (scripts/stage_times.py reads both)
    publish(out, {"startup": started - T0, "papermill": executed - started}, executed)


if __name__ == "__main__":
    main(sys.argv[1:])
