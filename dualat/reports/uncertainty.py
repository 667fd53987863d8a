"""The uncertainty every accuracy and AUROC of the report carries, and its one display form
"x ± s (n = N)".

Accuracy: the binomial standard error sqrt(p(1 - p) / n) of a fraction p of n images (0 when p is
0 or 1: then read n). AUROC: DeLong's standard error (DeLong, DeLong & Clarke-Pearson 1988) from
the saved scores of both sets; where the scores were not saved, Hanley & McNeil's (1982) from the
AUROC and the two set sizes. Model comparisons judge a difference against K_SIGMA combined errors.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

# How every measured accuracy and AUROC cell reads: "x ± s (n = N)", an AUROC's n as
# "<test> test + <OOD> OOD" (scripts/check_reports.py and the tests check every cell).
PM_N = re.compile(r"^-?\d+(\.\d+)? ± \d+(\.\d+)? \(n = \d+( test \+ \d+ OOD)?\)$")
# Two numbers differ beyond their uncertainty when |a - b| > K_SIGMA * sqrt(s_a² + s_b²).
K_SIGMA = 2.0
UNCERTAINTY_NOTE = (
    "± is one standard error: for an accuracy the binomial sqrt(p(1−p)/n) over the n images evaluated, "
    "for an AUROC DeLong's from the saved scores (Hanley–McNeil's where marked), for FID the std over "
    "sampling seeds, for KID the std over subsets."
)


def binomial_se(p: Any, n: Any) -> float | None:
    """sqrt(p (1 - p) / n) of a fraction p of n trials; None without a number p in [0, 1] and n > 0."""
    ok = isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1
    if not ok or not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None
    return math.sqrt(p * (1 - p) / n)


def delong_se(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """DeLong's standard error of the AUROC separating s_in (positives, (m,)) from s_out ((n,));
    ties count one half, as in the AUROC itself."""
    x, y = np.asarray(s_in, dtype=np.float64), np.asarray(s_out, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return math.nan
    from scipy.stats import rankdata  # lazy: scipy.stats takes ~0.6 s to import, every notebook imports this

    all_ranks = rankdata(np.concatenate([x, y]))  # mid-ranks: ties share their mean rank
    # V10_i = P(Y < x_i) + P(Y = x_i) / 2 and V01_j = P(X > y_j) + P(X = y_j) / 2, by ranks
    v10 = (all_ranks[:m] - rankdata(x)) / n
    v01 = 1.0 - (all_ranks[m:] - rankdata(y)) / m
    return math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def hanley_mcneil_se(auc: float, m: int, n: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUROC from m positives and n negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (m - 1) * (q1 - auc**2) + (n - 1) * (q2 - auc**2)) / (m * n))


def _decimals(s: float) -> int:
    """Decimals that show s with 2 significant digits when it starts with 1 or 2, else 1."""
    exponent = math.floor(math.log10(s))
    leading = int(s / 10**exponent)
    return max(0, -exponent + (1 if leading < 3 else 0))


def pm_text(x: float, s: Any = None, n: Any = None) -> str:
    """ "x ± s (n = N)": s rounded to 1-2 significant digits and x to the same decimal; without s
    "x (n = N)", without n no parenthesis."""
    if isinstance(s, (int, float)) and math.isfinite(s) and s > 0:
        d = _decimals(s)
        text = f"{x:.{d}f} ± {s:.{d}f}"
    elif isinstance(s, (int, float)) and s == 0:
        text = f"{x:.4g} ± 0"
    else:
        text = f"{x:.4g}"
    return text + (f" (n = {n})" if n is not None and n != "" else "")
