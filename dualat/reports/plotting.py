"""Drawing helpers shared by the figures and the training notebooks: saving a figure, a panel
that says why it is empty, and training curves from history.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from dualat.config import read_params
from dualat.paper_values import PAPER_PROFILES
from dualat.records import NotComputed
from dualat.reports.reading import REPORTS, history, short_reason
from dualat.reports.vocabulary import history_label

PANELS_PER_ROW = 3  # training curves: wider rows shrink each panel below reading size


def save_figure(fig, number: int, profile: str | None = None) -> Path:
    """reports/figures/figure<number>.png, with its profile under the panels; closes the figure."""
    profile = profile or read_params()["profile"]
    fig.text(
        0.01, 0.0, f"profile: {profile}" + PROFILE_CAVEAT.get(profile not in PAPER_PROFILES, ""), fontsize=8, va="top"
    )
    out = REPORTS / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"figure{number}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# Under every figure of a profile other than `paper`.
PROFILE_CAVEAT = {True: " (other settings, fewer images: shows that the pipeline runs, not the paper's claims)"}


def not_computed_axes(ax, reason: str | NotComputed, where: str = "") -> None:
    """An empty panel titled "not computed: <short reason>" (e.g. "not computed: cifar100 data
    missing"), prefixed by `where` (e.g. the data set); the full reason stays in the records."""
    text = reason.reason if isinstance(reason, NotComputed) else reason.replace("not computed: ", "")
    ax.set_title((f"{where}: " if where else "") + f"not computed: {short_reason(text)}", fontsize=9, color="#a33")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#ccc")


def image_or_reason(path: Path, status_of: dict | NotComputed) -> Any:
    """The image at `path`, else the record's not-computed reason, else that the file is missing."""
    if path.exists():
        return mpimg.imread(path)
    return status_of if isinstance(status_of, NotComputed) else NotComputed(f"{path} was not produced")


def _points(hist: list[dict], key: str) -> list[tuple[float, float]]:
    factor = history_label(key)[1]
    return [(h.get("images", h["step"]), factor * h[key]) for h in hist if isinstance(h.get(key), (int, float))]


def curves(axes, runs: dict[str, list[dict] | NotComputed], keys: tuple[str, ...]) -> None:
    """One panel per history key (labelled in the report's vocabulary, fractions in percent):
    every run's curve against the training images seen; a run with a single evaluation is one
    marker, and its legend says so."""
    for ax, key in zip(axes, keys):
        for label, hist in runs.items():
            if isinstance(hist, list):
                pts = _points(hist, key)
                if len(pts) == 1:
                    label = f"{label} (one evaluation: the run ended before a second)"
                if pts:
                    ax.plot(*zip(*pts), "o-", label=label, markersize=4 if len(pts) == 1 else 3)
        ax.set(xlabel="training images", ylabel=history_label(key)[0])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def plot_training(folder: str | Path, keys: list[str]):
    """Curves of history.json in a training folder, one panel per key, at most PANELS_PER_ROW
    to a row so that each stays readable (or panels titled with the not-computed reason)."""
    hist = history(Path(folder))
    cols = min(PANELS_PER_ROW, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    panels = axes.flatten()
    for ax in panels[len(keys) :]:
        ax.set_axis_off()
    if isinstance(hist, NotComputed):
        not_computed_axes(panels[0], hist)
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
