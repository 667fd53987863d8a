"""What each evaluation notebook shows: the figures an evaluation wrote, inline, under one line
that reads its numbers (with the profile's caveat outside the paper profile).

Each function takes the evaluation's out_dir (results/<dataset>/<method>/<group>), displays in a
notebook and returns the reading, so a script can print it. A record that was not computed
shows its reason instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

from dualat.paper_values import PAPER_PROFILES
from dualat.records import NotComputed, read_record
from dualat.reports.figures import counterfactual_curve
from dualat.reports.reading import is_number, percent, value
from dualat.reports.tables_ood import INPUTS, auroc_uncertainty
from dualat.reports.uncertainty import binomial_se, pm_text
from dualat.reports.vocabulary import SCORE_NAMES, dataset_name

CAVEAT = " ({profile} profile: shows that the stage runs; not evidence for the paper's claims.)"


# the value of each group without which there is nothing to read
HEADLINE = {"accuracy": "clean_acc", "generation": "fid_conditional", "counterfactuals": "fid", "ood": "sets"}


def _record(out_dir: Path, group: str) -> tuple[dict | NotComputed, str]:
    """(metrics, or why there are none: the record's own reason when its headline value was not
    computed; the caveat of the record's profile)."""
    path = out_dir / f"{group}.json"
    if not path.exists():
        return NotComputed(f"{path} was not produced"), ""
    record = read_record(path)
    profile = record.get("config", {}).get("profile", "paper")
    headline = value(record["metrics"], HEADLINE[group])
    metrics = headline if isinstance(headline, NotComputed) else record["metrics"]
    return metrics, "" if profile in PAPER_PROFILES else CAVEAT.format(profile=profile)


def _accuracy(p: Any, n: Any) -> str:
    """ "x ± s (n = N)" in percent with the binomial standard error, or the reason as text."""
    se = binomial_se(p, n)
    return pm_text(100 * p, 100 * se, n) if se is not None else str(p)


def _percent(v: Any) -> str:
    return f"{percent(v):.1f}%" if is_number(v) else str(v)


def _show(reading: str, images: list[tuple[str, Path]]) -> str:
    """The reading, then each image under its caption ({caption: path}; a missing file is skipped)."""
    if reading:
        display(Markdown(reading))
    for caption, path in images:
        if path.exists():
            display(Markdown(f"*{caption}*"))
            display(Image(filename=str(path)))
    return reading


def accuracy(out_dir: str | Path) -> str:
    """Clean, PGD and AutoAttack accuracy (each ± its binomial standard error, with n) and ECE in
    one line, then the reliability diagram."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "accuracy")
    if isinstance(metrics, NotComputed):
        return _show(f"Accuracy: {metrics}", [])
    n_test = metrics["n_test"]
    robust, n_aa = value(metrics, "autoattack", "robust_acc"), value(metrics, "autoattack", "n")
    reading = (
        f"Accuracy (%, ± binomial standard error): clean {_accuracy(metrics['clean_acc'], n_test)}, "
        f"PGD {_accuracy(metrics['pgd_acc'], n_test)}, AutoAttack {_accuracy(robust, n_aa)}; "
        f"ECE {_percent(metrics['ece'])} (reliability diagram below).{caveat}"
    )
    return _show(reading, [("Reliability diagram (calibration) on the test images", out_dir / "reliability.png")])


def _fid_kid(fid: Any, kid: Any) -> str:
    fid_text = f"FID {fid:.1f}" if is_number(fid) else f"FID {fid}"
    if not isinstance(kid, dict):
        return fid_text
    return f"{fid_text}, KID×10³ {1e3 * kid['mean']:.1f} ± {1e3 * kid['std']:.1f}"


def generation(out_dir: str | Path) -> str:
    """FID/KID of the conditional samples against the control (the seed images themselves),
    then the seed, conditional and unconditional sample grids."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "generation")
    if isinstance(metrics, NotComputed):
        return _show(f"Generation: {metrics}", [])
    control = _fid_kid(value(metrics, "control", "fid"), value(metrics, "control", "kid"))
    reading = (
        f"{metrics['n_samples']} class-conditional samples after {metrics['steps']} steps: "
        f"{_fid_kid(metrics['fid_conditional'], metrics['kid_conditional'])}; the seed images "
        f"before any step: {control} (lower is closer to the training set).{caveat}"
    )
    order = "sorted by class, 10 per row (with 10 classes, row k is class k)"
    grids = [
        (f"Seed images x0 (the control, before any step), {order}", out_dir / "seeds.png"),
        (f"Class-conditional samples of the same seeds, {order}", out_dir / "samples_conditional.png"),
        ("Unconditional samples (Eq. 8) of the same seeds, in the same places", out_dir / "samples_unconditional.png"),
    ]
    return _show(reading, grids)


def counterfactuals(out_dir: str | Path) -> str:
    """Class-wise FID against the confidence p(t|x') at each eps (Figure 1's axes), then the grid."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "counterfactuals")
    if isinstance(metrics, NotComputed):
        return _show(f"Counterfactuals: {metrics}", [])
    points = list(zip(metrics["eps"], metrics["fid"], metrics["confidence"]))
    pairs = "; ".join(f"ε {eps:g}: FID {fid:.1f} at p(t|x') {conf:.2f}" for eps, fid, conf in points)
    reading = f"{metrics['n']} counterfactuals towards a random other class. {pairs}.{caveat}"
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    counterfactual_curve(ax, metrics, "points labelled by ε")
    ax.set(xlabel="mean confidence p(t|x')", ylabel="class-wise FID (lower is better)")
    ax.legend(fontsize=7)
    display(Markdown(reading))
    display(fig)
    plt.close(fig)
    eps = ", ".join(f"{e:g}" for e in metrics["eps"])
    caption = f"One training image per row: the original in the first column, then its counterfactual at ε = {eps}."
    _show("", [(caption, out_dir / "counterfactuals.png")])
    return reading


def ood_reading(metrics: dict, scores: dict | None = None) -> str:
    """AUROC of max p(y|x) and of -E(x) per OOD set, clean / adversarial, each ± its standard
    error (DeLong's from `scores`, else Hanley-McNeil's) with the set sizes (0.5 = chance)."""
    parts = []
    for key, score in SCORE_NAMES.items():
        cells = []
        for name, cell in metrics["sets"].items():
            if isinstance(cell, (NotComputed, str)):
                cells.append(f"{dataset_name(name)} not computed")
                continue
            pair = []
            for inputs in INPUTS:
                auc = cell[key][inputs]
                more = auroc_uncertainty(auc, metrics, scores or {}, name, key, inputs)
                pair.append(pm_text(auc, more["std"] if is_number(more["std"]) else None))
            cells.append(
                f"{dataset_name(name)} {' / '.join(pair)} (n = {metrics.get('n_id')} test + {cell.get('n')} OOD)"
            )
        parts.append(f"score {score}: " + "; ".join(cells))
    return "AUROC, clean / adversarial OOD inputs (0.5 = chance), ± standard error: " + ". ".join(parts) + "."


def ood(out_dir: str | Path) -> str:
    """AUROCs in one line, then histograms of both scores: test set against each OOD set, clean
    and attacked (from out_dir/scores.npz)."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "ood")
    if isinstance(metrics, NotComputed):
        return _show(f"OOD detection: {metrics}", [])
    scores = {}
    if (out_dir / "scores.npz").exists():
        with np.load(out_dir / "scores.npz") as f:
            scores = dict(f)
    reading = ood_reading(metrics, scores) + caveat
    display(Markdown(reading))
    if scores:
        fig = score_histograms(scores)
        display(fig)
        plt.close(fig)
    return reading


def score_histograms(scores: dict[str, np.ndarray]):
    """One row per OOD set, one column per score: the test set's scores against the set's clean
    and adversarial ones (keys as `evaluation.ood_detection` writes them)."""
    sets = sorted({key.split("/")[0] for key in scores if not key.startswith("id/")})
    kinds = sorted({key.split("/")[1] for key in scores if key.startswith("id/")})
    fig, axes = plt.subplots(len(sets), len(kinds), figsize=(4.2 * len(kinds), 2.6 * len(sets)), squeeze=False)
    for row, name in zip(axes, sets):
        for ax, kind in zip(row, kinds):
            for label, key in (("test set", f"id/{kind}"), ("clean", f"{name}/{kind}/clean")):
                ax.hist(scores[key], bins=30, alpha=0.5, density=True, label=label)
            ax.hist(scores[f"{name}/{kind}/adversarial"], bins=30, histtype="step", density=True, label="attacked")
            ax.set(
                title=f"{dataset_name(name)}: {SCORE_NAMES.get(kind, kind)}",
                xlabel="score (higher = more in-distribution)",
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
