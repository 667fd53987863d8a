"""Expected calibration error and reliability diagrams (Guo et al. 2017, "On Calibration of Modern
Neural Networks"): equal-width confidence bins (lo, hi] on [0, 1], 15 bins by default as there."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def reliability_diagram_data(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, np.ndarray | float]:
    """Per-bin accuracy, mean confidence and count for probs (N, K) and labels (N,).

    Returns dict(bin_edges (n_bins + 1,), bin_acc, bin_conf, bin_count (n_bins,), ece); empty bins
    have NaN accuracy and confidence. Confidence = max_k p_k, bins are right-closed (lo, hi].
    """
    probs, labels = _numpy(probs).astype(np.float64), _numpy(labels)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # conf in (lo, hi]
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    ece = float(np.nansum(count / len(conf) * np.abs(acc - mean_conf)))
    return {"bin_edges": edges, "bin_acc": acc, "bin_conf": mean_conf, "bin_count": count, "ece": ece}


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| for probs (N, K) and labels (N,), in [0, 1]."""
    return reliability_diagram_data(probs, labels, n_bins)["ece"]


def plot_reliability(ax, data: dict, title: str = ""):
    """Draw a reliability diagram onto a matplotlib Axes and return it.

    `data` is `reliability_diagram_data`'s output, or the same read back from JSON (lists, with
    None for empty bins). Without a title, the title shows data["ece"] when present.
    """
    edges = np.asarray(data["bin_edges"], dtype=np.float64)
    acc = np.nan_to_num(np.asarray(data["bin_acc"], dtype=np.float64))  # empty bins: no bar
    conf = np.asarray(data["bin_conf"], dtype=np.float64)
    conf = np.where(np.isnan(conf), acc, conf)
    width = np.diff(edges)
    ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", label="accuracy")
    gap = dict(bottom=acc, color="red", alpha=0.3, label="gap to confidence")
    ax.bar(edges[:-1], conf - acc, width=width, align="edge", **gap)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    if not title and "ece" in data:
        title = f"ECE {100 * data['ece']:.2f}%"
    ax.set_title(title)
    ax.legend(loc="upper left")
    return ax
