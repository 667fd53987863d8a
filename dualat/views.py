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

from dualat.records import NotComputed, read_record
from dualat.reports.figures import counterfactual_curve
from dualat.reports.reading import is_number, percent, value

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
    return metrics, "" if profile == "paper" else CAVEAT.format(profile=profile)


def _percent(v: Any) -> str:
    return f"{percent(v):.1f}%" if is_number(v) else str(v)


def _show(reading: str, images: list[Path]) -> str:
    display(Markdown(reading))
    for path in images:
        if path.exists():
            display(Image(filename=str(path)))
    return reading


def accuracy(out_dir: str | Path) -> str:
    """Clean, PGD and AutoAttack accuracy and ECE in one line, then the reliability diagram."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "accuracy")
    if isinstance(metrics, NotComputed):
        return _show(f"Accuracy: {metrics}", [])
    robust, n = value(metrics, "autoattack", "robust_acc"), value(metrics, "autoattack", "n")
    on = "" if isinstance(robust, NotComputed) else f" on {n} images"
    robust = _percent(robust)
    reading = (
        f"Clean accuracy {_percent(metrics['clean_acc'])} on {metrics['n_test']} test images, "
        f"PGD {_percent(metrics['pgd_acc'])}, AutoAttack {robust}{on}; "
        f"ECE {_percent(metrics['ece'])} (reliability diagram below).{caveat}"
    )
    return _show(reading, [out_dir / "reliability.png"])


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
        f"before any step: {control} (lower is closer to the "
        f"training set). Below: seeds, conditional samples (row = class), unconditional.{caveat}"
    )
    grids = ("seeds", "samples_conditional", "samples_unconditional")
    return _show(reading, [out_dir / f"{name}.png" for name in grids])


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
    _show("Rows: the original, then each ε of the grid.", [out_dir / "counterfactuals.png"])
    return reading


def ood_reading(metrics: dict) -> str:
    """AUROC of -E(x) per OOD set, clean / adversarial, in one line (0.5 = chance)."""
    cells = []
    for name, cell in metrics["sets"].items():
        if isinstance(cell, (NotComputed, str)):
            cells.append(f"{name} not computed")
        else:
            cells.append(f"{name} {cell['neg_energy']['clean']:.2f} / {cell['neg_energy']['adversarial']:.2f}")
    return "AUROC of −E(x), clean / adversarial OOD inputs (0.5 = chance): " + "; ".join(cells) + "."


def ood(out_dir: str | Path) -> str:
    """AUROCs in one line, then histograms of both scores: test set against each OOD set, clean
    and attacked (from out_dir/scores.npz)."""
    out_dir = Path(out_dir)
    metrics, caveat = _record(out_dir, "ood")
    if isinstance(metrics, NotComputed):
        return _show(f"OOD detection: {metrics}", [])
    reading = ood_reading(metrics) + caveat
    display(Markdown(reading))
    if (out_dir / "scores.npz").exists():
        with np.load(out_dir / "scores.npz") as f:
            fig = score_histograms(dict(f))
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
            ax.set(title=f"{name}: {kind}", xlabel="score (higher = more in-distribution)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
