"""Figures 5-7: the seeds, Dual-AT's and RATIO's class-conditional sample grids, regrouped one row
per class where the paper shows them so (CIFAR-100's first 10 classes, RestrictedImageNet's 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from dualat.config import load
from dualat.records import NotComputed
from dualat.reports.plotting import image_or_reason, not_computed_axes, save_figure
from dualat.reports.reading import RESULTS, is_number, record, value
from dualat.reports.vocabulary import DATASET_NAMES, METHOD_NAMES

# Layout of the sample grids evaluate.generation writes (evaluate._save_sample_grids): the first
# SHOWN seeds, sorted by label (seed i has label i mod K), GRID_NROW per row, GRID_PAD pixels apart.
SHOWN, GRID_NROW, GRID_PAD = 100, 10, 2
# Figure 6 adds RATIO sampled with Dual-AT's 32 steps when this file exists in RATIO's folder.
RATIO_32_STEPS_FILE = "samples_conditional_T32.png"
RATIO_32_STEPS = f"{METHOD_NAMES['ratio']}, 32 steps"


def grid_tiles(img: Any, n: int, nrow: int = GRID_NROW, pad: int = GRID_PAD) -> list:
    """The n images (H, W, C) of a torchvision grid image with nrow per row, in order."""
    cols = min(nrow, n)
    t = (img.shape[1] - pad) // cols - pad  # square tiles
    return [img[pad + r * (t + pad) : pad + r * (t + pad) + t, pad + c * (t + pad) : pad + c * (t + pad) + t]
            for r, c in (divmod(j, nrow) for j in range(n))]  # fmt: skip


def rows_by_class(img: Any, n: int, K: int, classes: range, per_row: int = GRID_NROW) -> Any:
    """One row per class of `classes` (up to per_row images each) from a label-sorted grid of the
    first n seeds (labels i mod K); white where a class has fewer images."""
    tiles = grid_tiles(img, n)
    labels = sorted(i % K for i in range(n))
    t, pad = tiles[0].shape[0], GRID_PAD
    width = max(min(per_row, labels.count(k)) for k in classes)
    out = np.ones((len(classes) * (t + pad) + pad, width * (t + pad) + pad, img.shape[2]), dtype=img.dtype)
    for r, k in enumerate(classes):
        for c, j in enumerate([j for j, y in enumerate(labels) if y == k][:per_row]):
            out[pad + r * (t + pad) : pad + r * (t + pad) + t, pad + c * (t + pad) : pad + c * (t + pad) + t] = tiles[j]
    return out


def _shown(dataset: str) -> int:
    n = value(record(dataset, "dualat", "generation"), "n_samples")
    return min(SHOWN, n) if is_number(n) else SHOWN


def _panels(dataset: str, number: int) -> dict[str, tuple[Path, str]]:
    """{title: (grid file, method whose generation record explains a missing file)}."""
    folder = {m: RESULTS / dataset / m / "generation" for m in ("dualat", "ratio")}
    panels = {
        "seeds": (folder["dualat"] / "seeds.png", "dualat"),
        METHOD_NAMES["dualat"]: (folder["dualat"] / "samples_conditional.png", "dualat"),
        METHOD_NAMES["ratio"]: (folder["ratio"] / "samples_conditional.png", "ratio"),
    }
    if number == 6:
        panels[RATIO_32_STEPS] = (folder["ratio"] / RATIO_32_STEPS_FILE, "ratio")
    return panels


def _panel_image(dataset: str, title: str, path: Path, method: str, classes: range | None) -> Any:
    """The grid of one panel (regrouped by class when `classes` is given), or why not."""
    why = value(record(dataset, method, "generation"), "fid_conditional")
    if title == RATIO_32_STEPS:
        why = NotComputed(f"RATIO was not sampled at 32 steps ({path} was not produced)")
    img = image_or_reason(path, why)
    if isinstance(img, NotComputed) or classes is None:
        return img
    try:
        return rows_by_class(img, _shown(dataset), load(dataset=dataset).data.num_classes, classes)
    except (ValueError, IndexError) as err:  # a grid of another layout
        return NotComputed(f"{path}: not a grid of the first {SHOWN} seeds ({err})")


def figure_samples(number: int, dataset: str, classes: range | None = None, profile: str | None = None) -> Path:
    """Seeds, Dual-AT's and RATIO's conditional samples; with `classes`, one row per class
    (Figure 6: CIFAR-100's first 10 classes, plus RATIO at 32 steps; Figure 7: RIN's 9 classes)."""
    panels = _panels(dataset, number)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5))
    for ax, (title, (path, method)) in zip(axes, panels.items()):
        img = _panel_image(dataset, title, path, method, classes)
        if isinstance(img, NotComputed):
            not_computed_axes(ax, img, f"{DATASET_NAMES[dataset]}, {title}")
            continue
        ax.imshow(img)
        ax.set_title(title + (f" (rows: classes {classes.start}-{classes.stop - 1})" if classes else ""))
        ax.set_axis_off()
    return save_figure(fig, number, profile)
