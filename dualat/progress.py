"""Progress of long loops: a live bar when someone watches, a few lines when the output is recorded.

    for start, stop in progress.bar(pairs, desc="logits", enabled=show): ...
    bar = progress.bar(total=steps, initial=done, desc="stage 2"); bar.update(1); bar.set_postfix(T=3)

How a loop reports, decided when the bar is made:

1. `$DUALAT_PROGRESS`, when set: "live" (a tqdm bar), "lines" (a few plain lines), "off" (nothing).
   `scripts/nb.py` sets "lines" for the notebooks it executes: a papermill kernel has no
   frontend, and a recorded text bar is hundreds of lines in the notebook and its HTML.
2. Unset: "live" inside a Jupyter kernel (a notebook opened in JupyterLab) and when stdout is a
   terminal; "lines" otherwise (output piped to a file or a log).

"live" is what `tqdm.auto` picks (the notebook widget when ipywidgets is installed, else the text
bar) without its "IProgress not found" warning. "lines" prints to stdout the start, each quarter
of the total passed and, if the loop stops elsewhere, the end: at most six lines per loop.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.std import tqdm

MODES = ("live", "lines", "off")
ENV = "DUALAT_PROGRESS"


def mode() -> str:
    """ "live", "lines" or "off" by the rule of the module docstring."""
    chosen = os.environ.get(ENV, "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise ValueError(f"${ENV} is {chosen!r}; use one of {', '.join(MODES)}")
        return chosen
    return "live" if _in_kernel() or sys.stdout.isatty() else "lines"


def bar(
    iterable: Iterable | None = None, total: int | None = None, desc: str = "", enabled: bool = True, initial: int = 0
) -> tqdm | Lines:
    """A progress bar over `iterable` (or updated by hand up to `total`, from `initial`), used as a
    tqdm: iterate it, or call `update(n)`, `set_postfix(**values)` and `close()`. `enabled=False`
    (or mode "off") shows nothing."""
    chosen = mode() if enabled else "off"
    if chosen == "lines":
        return Lines(iterable, total, desc, initial)
    if chosen == "off":
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if _in_kernel():
        from tqdm.notebook import IProgress  # lazy: imports IPython, needed only in a kernel
        from tqdm.notebook import tqdm as widget  # lazy: as above

        if IProgress is not None:  # ipywidgets installed: tqdm.auto's choice, minus its warning
            return widget(iterable, total=total, desc=desc, initial=initial)
    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True)


def _in_kernel() -> bool:
    """True inside a Jupyter (ZMQ) kernel: JupyterLab, or a notebook executed by papermill."""
    ipython = sys.modules.get("IPython")  # imported by every kernel; never imported here
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class Lines:
    """A tqdm stand-in for recorded output: prints `desc: n/total (p%), elapsed, ~left, postfix`
        when made, whenever n passes a quarter of the total, and at close if n or the postfix moved
    since; without
        a total, only when made and at close. Iterating it updates it and closes it at the end."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str = "", initial: int = 0):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, initial
        self.postfix = ""
        self._initial, self._t0, self._closed = initial, time.time(), False
        self._marks = [math.ceil(total * q / 4) for q in (1, 2, 3, 4)] if total else []
        self._print()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count n more steps; print when a quarter of the total is passed."""
        before, self.n = self.n, self.n + n
        if any(before < mark <= self.n for mark in self._marks):
            self._print()

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line, as tqdm's `set_postfix` shows them."""
        shown = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in values.items()}
        self.postfix = ", ".join(f"{k}={v}" for k, v in shown.items())

    def close(self) -> None:
        """Print the last count and values if they were not printed yet (a training loop sets its
        last evaluation's values after its last step); later calls do nothing."""
        if not self._closed and (self.n != self._printed or self.postfix != self._printed_postfix):
            self._print()
        self._closed = True

    def _print(self) -> None:
        elapsed = time.time() - self._t0
        parts = [f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"]
        if self.n > self._initial:
            parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
            if self.total and self.n < self.total:
                left = elapsed / (self.n - self._initial) * (self.total - self.n)
                parts.append(f"~{tqdm.format_interval(left)} left")
        parts += [self.postfix] if self.postfix else []
        print(f"{self.desc}: " * bool(self.desc) + ", ".join(parts), flush=True)
        self._printed, self._printed_postfix = self.n, self.postfix
