"""Table rows and their verdicts against the paper.

A row is {setting, quantity, paper, ours, note, kind, ...}; kind says what may be compared:
"result" (our number vs the paper's), "setting" (the paper profile's configuration vs the paper),
"quoted" (the paper quotes it from other work; not reproduced) or "info" (ours only).

In the `paper` profile each result with a paper value is judged within `TOLERANCE`
("within ±t" / "outside ±t" / "not computed") and shows ours - paper. Any other profile (quick,
proxy, ...) runs other settings on fewer images: its results read "<profile> profile, not
comparable" and never carry a difference; a table of such results has no difference column.
"""

from __future__ import annotations

from typing import Any

from dualat import paper_values
from dualat.records import NotComputed
from dualat.reports.reading import is_number, short_reason
from dualat.reports.uncertainty import K_SIGMA, pm_text

# {quantity kind: ("abs" | "rel", t)}: ours is "within" when |ours - paper| <= t (abs) or
# <= t * |paper| (rel).
TOLERANCE = {
    # Clean accuracy, percentage points. Reruns of one adversarial-training recipe spread by a few
    # tenths of a point (the paper's own ± over runs: 0.03 to 0.62), and RATIO's numbers moved by
    # over a point between its paper and the released checkpoint (Table 7); 1 point separates a
    # faithful rerun from a different recipe.
    "clean_acc": ("abs", 1.0),
    # AutoAttack robust accuracy, points: the same run-to-run spread (paper ± 0.01 to 0.73);
    # AutoAttack itself is deterministic up to its seed.
    "robust_acc": ("abs", 1.0),
    # FID, relative 10%: at 50K samples the sampling spread is small (paper ± 0.03 to 1.1), but
    # FID moves by several percent with the Inception weights and resize, PNG quantisation, the
    # reference set and the draw of OOD seeds, none of which the paper pins down.
    "fid": ("rel", 0.10),
    # Inception Score, absolute 0.3: the spread between Inception implementations at 50K samples
    # (the paper's ± 0.02 is sampling only).
    "inception_score": ("abs", 0.3),
    # AUROC with 1024 OOD images: its standard error is about 0.005-0.01; twice that.
    "auroc": ("abs", 0.02),
    # Counterfactual confidence p(t|x') (Figure 1), a mean over the training images: 0.02.
    "confidence": ("abs", 0.02),
    # ECE (Figure 3; the paper prints no number, kept for the record): 1 point of calibration error.
    "ece": ("abs", 0.01),
    # Best T of our grid search over sampling steps (Table 8): FID is flat near its minimum in T,
    # so +-2 steps.
    "steps": ("abs", 2),
}
# Row keys of every table, in column order (vocabulary.COLUMNS gives their headers).
# Our number's ± and n (row keys "std", "n") are shown inside its cell (`ours_text`).
FIELDS = ["setting", "quantity", "paper", "ours", "difference", "verdict", "note"]


def row(
    setting: str, quantity: str, paper: Any, ours: Any, note: str = "", *, kind: str = "result", **more: Any
) -> dict:
    """One table row (kinds: see the module doc). more: tol (a TOLERANCE key), std (the standard
    error of ours), n (the images behind ours, a count or text), same/how (a precomputed settings
    comparison)."""
    return {"setting": setting, "quantity": quantity, "paper": paper, "ours": ours, "note": note, "kind": kind} | more


def quoted(setting: str, quantity: str, paper: Any) -> dict:
    """A row the paper quotes from other work: its value, nothing of ours."""
    return row(setting, quantity, paper, "quoted by the paper", kind="quoted")


def within(ours: float, paper: float, kind: str) -> bool:
    """Whether ours is within TOLERANCE[kind] of the paper's value."""
    mode, t = TOLERANCE[kind]
    return abs(ours - paper) <= (t * abs(paper) if mode == "rel" else t)


def tolerance_text(kind: str) -> str:
    """The tolerance as text: ±1 (absolute) or ±10% (relative)."""
    mode, t = TOLERANCE[kind]
    return f"±{t:g}" if mode == "abs" else f"±{100 * t:g}%"


def verdict(row: dict, profile: str) -> str:
    """The row's verdict against the paper (see the module doc)."""
    kind, paper, ours = row["kind"], row["paper"], row["ours"]
    if kind == "quoted":
        return "quoted by the paper"
    if kind == "info" or paper is None:
        return ""
    if kind == "result" and profile not in paper_values.PAPER_PROFILES:
        return f"{profile} profile, not comparable"
    if isinstance(ours, NotComputed):
        return "not computed"
    if paper == paper_values.NOT_LEGIBLE:
        return "paper value not legible"
    if kind == "setting":
        return "same" if row.get("same", ours == paper) else "differs"
    if is_number(ours) and is_number(paper) and row.get("tol"):
        return judged(ours, paper, row["tol"], row.get("std"))
    return "same" if ours == paper else "differs"


def judged(ours: float, paper: float, tol: str, std: Any = None) -> str:
    """ "within" when |ours - paper| <= t; "outside" when it exceeds t by more than K_SIGMA of our
    standard error `std` too; else "undecided": our uncertainty covers the crossing."""
    text = tolerance_text(tol)
    if within(ours, paper, tol):
        return f"within tolerance ({text})"
    margin = K_SIGMA * std if is_number(std) else 0.0
    mode, t = TOLERANCE[tol]
    if abs(ours - paper) - margin > (t * abs(paper) if mode == "rel" else t):
        return f"outside tolerance ({text})"
    return f"undecided: outside {text} by less than {K_SIGMA:g} standard errors"


def difference(row: dict, profile: str) -> Any:
    """ours - paper for numbers, same/differs for settings; "" where a difference means nothing
    (always for a result outside the paper profile)."""
    kind, paper, ours = row["kind"], row["paper"], row["ours"]
    if kind in ("quoted", "info") or paper is None or isinstance(ours, NotComputed):
        return ""
    if kind == "result" and profile not in paper_values.PAPER_PROFILES:
        return ""
    if is_number(ours) and is_number(paper):
        return ours - paper
    if kind == "setting":
        return "same" if row.get("same", ours == paper) else row.get("how", "differs")
    return ""


def _std_cell(row: dict) -> Any:
    """The ± of our number: empty without one, and where our number itself is missing."""
    return "" if isinstance(row["ours"], NotComputed) else row.get("std", "")


def ours_text(row: dict) -> Any:
    """Our number as shown: "x ± s (n = N)" with its standard error and n where the row has
    them (every accuracy and AUROC), "x ± s" with a std alone; else the value as it is."""
    ours, std, n = row["ours"], row.get("std"), row.get("n")
    if not is_number(ours) or (std in (None, "") and n is None):
        return ours
    if isinstance(std, NotComputed):
        return f"{pm_text(ours, None, n)} (±: {short_reason(std.reason)})"
    return pm_text(ours, std if is_number(std) else None, n)


def finish_rows(rows: list[dict], profile: str) -> tuple[list[dict], list[str]]:
    """Rows with their difference, verdict and ± (key "std"), and the row keys to show: a table
    of results (no settings rows) in a profile other than `paper` has no difference column."""
    out = [
        r | {"difference": difference(r, profile), "verdict": verdict(r, profile), "std": _std_cell(r)} for r in rows
    ]
    fields = list(FIELDS)
    if profile not in paper_values.PAPER_PROFILES and not any(r["kind"] == "setting" for r in rows):
        fields.remove("difference")
    return out, fields


def verdict_rule(profile: str) -> str:
    """One sentence under every table and in the index: how this profile's rows are judged."""
    if profile not in paper_values.PAPER_PROFILES:
        return (
            f"The {profile} profile runs other settings on fewer images: its numbers are not comparable "
            f"with the paper's: their verdicts read '{profile} profile, not comparable' and the record tables "
            "have no difference column."
        )
    tol = ", ".join(f"{k} {tolerance_text(k)}" for k in TOLERANCE)
    return (
        f"Verdict: ours within the tolerance of the paper's value ({tol}; reasons in dualat/reports/verdicts.py); "
        f"outside it only when the difference exceeds the tolerance by more than {K_SIGMA:g} of our standard "
        "errors, else undecided. "
        f"Profile {profile}: CIFAR-10 Dual-AT is judged against {paper_values.REFERENCE_SOURCE.get(profile, 'the paper')}."
    )
