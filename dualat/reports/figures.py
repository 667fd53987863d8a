"""Figures 1-8 as reports/figures/figure<n>.png: counterfactuals (1), the L_BCE augmentation
ablation (2), calibration (3), stage-2 training curves (4), sample grids (5-7, in
`sample_figures`) and unconditional samples (8). A panel without data is titled with its short
reason; every figure carries its profile."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from dualat import paper_values
from dualat.config import DATASETS, METHODS, load
from dualat.metrics import plot_reliability
from dualat.records import NotComputed
from dualat.reports.plotting import curves, image_or_reason, not_computed_axes, save_figure
from dualat.reports.reading import MODELS, RESULTS, history, is_number, record, short_reason, value
from dualat.reports.sample_figures import figure_samples
from dualat.reports.vocabulary import DATASET_NAMES, METHOD_NAMES

# The paper's headline points of Figure 1 (Sec. 4.3.2) are drawn on this dataset's panel: the text
# does not name the dataset; CIFAR-10 is the one of its Tables 1 and Figure 3.
FIGURE1_PAPER_DATASET = "cifar10"


def _paper_points(ax) -> None:
    """The paper's headline points: Dual-AT FID 25.53 at eps 4, RATIO 43.18 at eps 8, both at
    confidence about 0.89 (stars, labelled)."""
    for method, (eps, fid, conf) in paper_values.FIGURE1.items():
        ax.plot([conf], [fid], "*", markersize=12, label=f"paper: {METHOD_NAMES[method]} (eps {eps:g})")
        ax.annotate(f"paper eps {eps:g}", (conf, fid), fontsize=7, textcoords="offset points", xytext=(4, -10))


def _counterfactual_curve(ax, dataset: str, method: str) -> bool:
    """Class-wise FID against confidence over the eps grid of one model; whether anything was drawn."""
    return counterfactual_curve(ax, record(dataset, method, "counterfactuals"), METHOD_NAMES[method])


def counterfactual_curve(ax, cf: dict | NotComputed, label: str) -> bool:
    """Class-wise FID against confidence p(t|x') over the eps grid of one counterfactuals record
    (each point labelled with its eps); whether anything was drawn."""
    fid, conf, eps = value(cf, "fid"), value(cf, "confidence"), value(cf, "eps")
    if not (isinstance(fid, list) and isinstance(conf, list) and isinstance(eps, list)):
        return False
    pts = [(c, f, e) for c, f, e in zip(conf, fid, eps) if is_number(f) and is_number(c)]
    if not pts:
        return False
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    for c, f, e in pts:
        ax.annotate(f"{e:g}", (c, f), fontsize=7, textcoords="offset points", xytext=(3, 3))
    return True


def figure1(profile: str | None = None) -> Path:
    """Figure 1: counterfactual FID against confidence p(t|x'), per dataset, with the paper's points."""
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 4))
    for ax, dataset in zip(axes, DATASETS):
        drawn = [_counterfactual_curve(ax, dataset, method) for method in METHODS]
        fid = value(record(dataset, "dualat", "counterfactuals"), "fid")
        reason = fid.reason if isinstance(fid, NotComputed) else "no finite (confidence, FID) point in the records"
        if dataset == FIGURE1_PAPER_DATASET:
            _paper_points(ax)
            ours = "" if any(drawn) else f" (ours not computed: {short_reason(reason)})"
            drawn.append(True)
        if any(drawn):
            title = DATASET_NAMES[dataset] + (ours if dataset == FIGURE1_PAPER_DATASET else "")
            ax.set(title=title, xlabel="mean confidence p(t|x')", ylabel="class-wise FID")
            ax.legend(fontsize=7)
        else:
            not_computed_axes(ax, reason, DATASET_NAMES[dataset])
    return save_figure(fig, 1, profile)


def figure2(profile: str | None = None) -> Path:
    """Figure 2: stage-2 robust accuracy and FID under each augmentation of L_BCE (CIFAR-10), one
    line per run (a single marker, said in the legend, for a run evaluated once)."""
    kinds = load(dataset="cifar10").stage2.ablation_kinds
    runs = {k: history(MODELS / "cifar10" / "ablation" / k) for k in kinds}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if all(isinstance(r, NotComputed) for r in runs.values()):
        for ax in axes:
            not_computed_axes(ax, next(iter(runs.values())))
    else:
        curves(axes, runs, ("robust_acc", "fid"))
    return save_figure(fig, 2, profile)


def figure3(profile: str | None = None) -> Path:
    """Figure 3: reliability diagrams and ECE of the CIFAR-10 models."""
    fig, axes = plt.subplots(1, len(METHODS), figsize=(4.5 * len(METHODS), 4))
    for ax, method in zip(axes, METHODS):
        acc = record("cifar10", method, "accuracy")
        data, ece = value(acc, "reliability"), value(acc, "ece")
        if isinstance(data, dict) and isinstance(ece, (int, float)):
            n = value(acc, "n_test")
            on = f" (n = {n})" if isinstance(n, int) else ""
            plot_reliability(ax, data, f"{METHOD_NAMES[method]}  ECE {100 * ece:.2f}%{on}")
        else:
            why = data if isinstance(data, NotComputed) else ece
            not_computed_axes(ax, why if isinstance(why, NotComputed) else f"ECE is {why!r}", METHOD_NAMES[method])
    return save_figure(fig, 3, profile)


def figure4(profile: str | None = None) -> Path:
    """Figure 4: Dual-AT's stage-2 curves (robust accuracy, FID) per dataset."""
    fig, axes = plt.subplots(2, len(DATASETS), figsize=(5 * len(DATASETS), 7), squeeze=False)
    for j, dataset in enumerate(DATASETS):
        hist = history(MODELS / dataset / "dualat")
        if isinstance(hist, NotComputed):
            for ax in axes[:, j]:
                not_computed_axes(ax, hist, DATASET_NAMES[dataset])
            continue
        curves(axes[:, j], {DATASET_NAMES[dataset]: hist}, ("robust_acc", "fid"))
    return save_figure(fig, 4, profile)


def figure8(profile: str | None = None) -> Path:
    """Figure 8: Dual-AT's unconditional samples per dataset."""
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 5))
    for ax, dataset in zip(axes, DATASETS):
        path = RESULTS / dataset / "dualat" / "generation" / "samples_unconditional.png"
        img = image_or_reason(path, value(record(dataset, "dualat", "generation"), "fid_unconditional"))
        if isinstance(img, NotComputed):
            not_computed_axes(ax, img, DATASET_NAMES[dataset])
        else:
            ax.imshow(img)
            ax.set_title(DATASET_NAMES[dataset])
            ax.set_axis_off()
    return save_figure(fig, 8, profile)


# {number: function(profile=None) -> path}; the profile is drawn under each figure.
FIGURES = {
    1: figure1, 2: figure2, 3: figure3, 4: figure4, 5: lambda profile=None: figure_samples(5, "cifar10", None, profile),
    6: lambda profile=None: figure_samples(6, "cifar100", range(10), profile),
    7: lambda profile=None: figure_samples(7, "rin", range(9), profile), 8: figure8,
}  # fmt: skip
