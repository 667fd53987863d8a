"""Drawing helpers shared by the figures and the training notebooks: saving a figure, a panel
that says why it is empty, and training curves from history.json."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from dualat.records import NotComputed
from dualat.reports.reading import REPORTS, history

PANELS_PER_ROW = 3  # training curves: wider rows shrink each panel below reading size


def save_figure(fig, number: int) -> Path:
    """reports/figures/figure<number>.png; closes the figure."""
    out = REPORTS / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"figure{number}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def wrap(text: str, width: int = 60) -> str:
    """At most six lines of `width` characters."""
    return "\n".join(textwrap.wrap(text, width)[:6])


def not_computed_axes(ax, reason: str) -> None:
    """An empty panel that reads "not computed: <reason>"."""
    reason = reason.replace("not computed: ", "")  # str(NotComputed) carries the prefix already
    ax.text(0.5, 0.5, "not computed:\n" + wrap(reason), ha="center", va="center", fontsize=8, wrap=True,
            transform=ax.transAxes)  # fmt: skip
    ax.set_axis_off()


def image_or_reason(path: Path, status_of: dict | NotComputed) -> Any:
    """The image at `path`, else the record's not-computed reason, else that the file is missing."""
    if path.exists():
        return mpimg.imread(path)
    return status_of if isinstance(status_of, NotComputed) else NotComputed(f"{path} was not produced")


def curves(axes, runs: dict[str, list[dict] | NotComputed], keys: tuple[str, ...]) -> None:
    """One panel per history key: every run's curve against the training images seen."""
    for ax, key in zip(axes, keys):
        for label, hist in runs.items():
            if isinstance(hist, list):
                pts = [(h.get("images", h["step"]), h[key]) for h in hist if key in h]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=label, markersize=3)
        ax.set(xlabel="training images", ylabel=key)
        ax.legend(fontsize=7)


def plot_training(folder: str | Path, keys: list[str]):
    """Curves of history.json in a training folder, one panel per key, at most PANELS_PER_ROW
    to a row so that each stays readable (or the not-computed reason)."""
    hist = history(Path(folder))
    cols = min(PANELS_PER_ROW, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    panels = axes.flatten()
    for ax in panels[len(keys) :]:
        ax.set_axis_off()
    if isinstance(hist, NotComputed):
        not_computed_axes(panels[0], hist.reason)
        for ax in panels[1:]:
            ax.set_axis_off()
        return fig
    curves(panels, {Path(folder).name: hist}, tuple(keys))
    fig.tight_layout()
    return fig


def plot_ablation(folder: str | Path, kinds: tuple[str, ...]):
    """Figure 2 from the ablation runs in folder/<kind>/history.json."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    curves(axes, {k: history(Path(folder) / k) for k in kinds}, ("robust_acc", "fid"))
    return fig
