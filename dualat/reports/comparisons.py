"""Comparisons between models by KID and by clean and AutoAttack accuracy (Dual-AT vs Standard AT,
Dual-AT vs RATIO; KID also each model vs its own seed images x0), each judged against its
uncertainty (KID's std over subsets, the accuracies' binomial standard errors); the index's
Comparisons section and reports/metrics.json carry them."""

from __future__ import annotations

from typing import Any

from dualat.config import METHODS
from dualat.metrics import exceeds_uncertainty
from dualat.paper_values import PAPER_PROFILES
from dualat.records import NotComputed
from dualat.reports.reading import is_number, record, short_reason, value
from dualat.reports.uncertainty import K_SIGMA, binomial_se, pm_text
from dualat.reports.vocabulary import METHOD_NAMES, quantity

COMPARISON_RULE = (
    f"Rule: two KID estimates (mean m, standard deviation s over KID's subsets) differ beyond the "
    f"uncertainty when |m1 - m2| > {K_SIGMA:g}·sqrt(s1² + s2²). This is a heuristic: the subsets share "
    "images and both models share the reference set, so the stds are not independent errors; below the "
    "threshold means no conclusion, not equality. A model beats its control when its samples are closer "
    "to the data than the seed images x0 it started from. Accuracies compare the same way with their binomial "
    "standard errors (an upper bound: both models see the same images)."
)


def _kid_x1000(gen: Any, keys: tuple[str, ...], what: str) -> tuple[float, float] | NotComputed:
    """(mean, std) ×10³ of the KID entry {mean, std, ...} at `keys` of a generation record, or why not."""
    mean, std = value(gen, *keys, "mean"), value(gen, *keys, "std")
    for v in (mean, std):
        if isinstance(v, NotComputed):
            return v
        if not is_number(v):
            return NotComputed(f"{what} is {v!r}")
    return 1e3 * mean, 1e3 * std


def kid_of(gen: Any, mode: str = "conditional") -> tuple[float, float] | NotComputed:
    """(mean, std) ×10³ of a generation record's KID, or why not."""
    return _kid_x1000(gen, (f"kid_{mode}",), f"kid_{mode}")


def control_kid(gen: Any) -> tuple[float, float] | NotComputed:
    """(mean, std) ×10³ of the KID of a generation record's seed images x0 (the control)."""
    return _kid_x1000(gen, ("control", "kid"), "control KID")


def _fid_remark(name_a: str, fid_a: Any, name_b: str, fid_b: Any) -> str:
    if not (is_number(fid_a) and is_number(fid_b)):
        return ""
    return f" FID {fid_a:.4g} vs {fid_b:.4g} ({name_a if fid_a < fid_b else name_b} lower; no uncertainty judged)."


def compare_kid(name_a: str, a: Any, name_b: str, b: Any, fid_a: Any = None, fid_b: Any = None) -> dict:
    """A statement of whether model a's KID differs from b's beyond the uncertainty
    (`metrics.exceeds_uncertainty` with K_SIGMA), with the numbers behind it."""
    for v in (a, b):
        if isinstance(v, NotComputed):
            statement = f"{name_a} vs {name_b}: not computed: {short_reason(v.reason)}"
            return {"exceeds": None, "statement": statement, "reason": v.reason}
    (ma, sa), (mb, sb) = a, b
    # A heuristic, not a test: the subsets of one KID estimate share images, and two models'
    # estimates share the reference set, so the stds are not independent errors. A difference
    # below the threshold means "no conclusion", not "equal".
    judged = exceeds_uncertainty(ma, sa, mb, sb, K_SIGMA)
    threshold, exceeds = judged["uncertainty"], judged["exceeds"]
    lower = name_a if ma < mb else name_b
    verdict_text = (
        f"the difference exceeds the uncertainty: {lower} has the lower KID"
        if exceeds
        else "the difference does not exceed the uncertainty: no conclusion"
    )
    return {
        "kid_a": [ma, sa], "kid_b": [mb, sb], "difference": ma - mb, "threshold": threshold, "exceeds": exceeds,
        "fid_a": fid_a if is_number(fid_a) else None, "fid_b": fid_b if is_number(fid_b) else None,
        "statement": f"{name_a} vs {name_b}: {quantity('kid')} {ma:.3g} ± {sa:.2g} vs {mb:.3g} ± {sb:.2g}, "
        f"difference {ma - mb:+.3g}, threshold {threshold:.3g}: {verdict_text}.{_fid_remark(name_a, fid_a, name_b, fid_b)}",
    }  # fmt: skip


ACCURACY_KEYS = {"clean_acc": ("clean_acc",), "robust_acc": ("autoattack", "robust_acc")}
ACCURACY_N = {"clean_acc": ("n_test",), "robust_acc": ("autoattack", "n")}


def accuracy_of(acc: Any, key: str) -> tuple[float, float, int] | NotComputed:
    """(percent, binomial standard error in points, n) of an accuracy record's `key` (clean_acc or
    robust_acc, AutoAttack's), or why not."""
    p, n = value(acc, *ACCURACY_KEYS[key]), value(acc, *ACCURACY_N[key])
    for v in (p, n):
        if isinstance(v, NotComputed):
            return v
    se = binomial_se(p, n)
    if se is None:
        return NotComputed(f"{key} {p!r} of n {n!r} is not an accuracy")
    return 100 * p, 100 * se, n


def compare_accuracy(key: str, name_a: str, a: Any, name_b: str, b: Any) -> dict:
    """Whether two models' accuracies (`accuracy_of`) differ beyond K_SIGMA combined binomial
    standard errors. Both models see the same images, so the errors are correlated and the
    combined error, taken as independent, is an upper bound: a difference below it is no conclusion."""
    for v in (a, b):
        if isinstance(v, NotComputed):
            statement = f"{name_a} vs {name_b}, {quantity(key)}: not computed: {short_reason(v.reason)}"
            return {"exceeds": None, "statement": statement, "reason": v.reason}
    (pa, sa, na), (pb, sb, nb) = a, b
    judged = exceeds_uncertainty(pa, sa, pb, sb, K_SIGMA)
    higher = name_a if pa > pb else name_b
    verdict_text = (
        f"the difference exceeds the uncertainty: {higher} is more accurate"
        if judged["exceeds"]
        else "the difference does not exceed the uncertainty: no conclusion"
    )
    return {
        "acc_a": [pa, sa, na], "acc_b": [pb, sb, nb], "difference": pa - pb, "threshold": judged["uncertainty"],
        "exceeds": judged["exceeds"],
        "statement": f"{name_a} vs {name_b}: {quantity(key)} {pm_text(pa, sa, na)} vs {pm_text(pb, sb, nb)}, "
        f"difference {pa - pb:+.3g}, threshold {judged['uncertainty']:.3g} points: {verdict_text}.",
    }  # fmt: skip


def comparisons(dataset: str = "cifar10") -> dict:
    """{key: compare_kid(...) | compare_accuracy(...)}: Dual-AT (stage 2) vs Standard AT (stage 1)
    and vs RATIO by KID, clean and AutoAttack accuracy, and every model vs its own seed images x0
    (the control) by KID."""
    gen = {m: record(dataset, m, "generation") for m in METHODS}
    out = {}
    for other in ("standard_at", "ratio"):
        out[f"dualat_vs_{other}"] = compare_kid(
            METHOD_NAMES["dualat"], kid_of(gen["dualat"]), METHOD_NAMES[other], kid_of(gen[other]),
            value(gen["dualat"], "fid_conditional"), value(gen[other], "fid_conditional"),
        )  # fmt: skip
    acc = {m: record(dataset, m, "accuracy") for m in METHODS}
    for other in ("standard_at", "ratio"):
        for key in ACCURACY_KEYS:
            out[f"dualat_vs_{other}_{key}"] = compare_accuracy(
                key, METHOD_NAMES["dualat"], accuracy_of(acc["dualat"], key), METHOD_NAMES[other],
                accuracy_of(acc[other], key),
            )  # fmt: skip
    for m in METHODS:
        out[f"{m}_vs_control"] = compare_kid(
            METHOD_NAMES[m], kid_of(gen[m]), "its seed images x0 (control)", control_kid(gen[m]),
            value(gen[m], "fid_conditional"), value(gen[m], "control", "fid"),
        )  # fmt: skip
    return out


def comparison_text(profile: str, comps: dict) -> list[str]:
    """The lines of the Comparisons section."""
    lines = [COMPARISON_RULE]
    if profile not in PAPER_PROFILES:
        lines.append(
            f"The {profile} profile trains briefly and samples few images: these statements test the "
            "pipeline, and they are not evidence for or against the paper's claims."
        )
    return lines + [c["statement"] for c in comps.values()]
