"""reports/metrics.json for `dvc metrics show`: every model's headline numbers (machine keys,
accuracies as fractions with their binomial standard error `*_se` and image count `n_*`, KID ×10³
± its std) and the model comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dualat.config import DATASETS, METHODS
from dualat.records import NotComputed
from dualat.reports.comparisons import comparisons, kid_of
from dualat.reports.paths import write_public
from dualat.reports.reading import REPORTS, record, short_reason, value
from dualat.reports.uncertainty import binomial_se


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, NotComputed):
        return f"not computed: {short_reason(v.reason)}"
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _metric_cell(v: Any) -> Any:
    """A number as it is; anything else as text, a not-computed one with its short reason
    (`dvc metrics show` prints a table)."""
    if isinstance(v, (int, float)):
        return v
    return f"not computed: {short_reason(v.reason)}" if isinstance(v, NotComputed) else str(v)


def _se(p: Any, n: Any) -> Any:
    """The binomial standard error of an accuracy, or why there is none."""
    if isinstance(p, NotComputed):
        return p
    se = binomial_se(p, n)
    return se if se is not None else NotComputed("no image count n in the record")


def headline(dataset: str, method: str) -> dict[str, Any]:
    """Clean and AutoAttack accuracy (fractions, each with its binomial standard error and the
    number of images n), conditional FID and KID ×10³ (± std) of one model."""
    acc, gen = record(dataset, method, "accuracy"), record(dataset, method, "generation")
    kid = kid_of(gen)
    clean, n_test = value(acc, "clean_acc"), value(acc, "n_test")
    robust, n_aa = value(acc, "autoattack", "robust_acc"), value(acc, "autoattack", "n")
    entry = {
        "clean_acc": clean,
        "clean_acc_se": _se(clean, n_test),
        "n_test": n_test,
        "autoattack_acc": robust,
        "autoattack_acc_se": _se(robust, n_aa),
        "n_autoattack": n_aa,
        "fid": value(gen, "fid_conditional"),
        "kid_x1e3": kid[0] if isinstance(kid, tuple) else kid,
        "kid_std_x1e3": kid[1] if isinstance(kid, tuple) else kid,
    }
    return {k: _metric_cell(v) for k, v in entry.items()}


def write_metrics(profile: str = "quick", comps: dict | None = None) -> Path:
    """Headline numbers and the model comparisons for `dvc metrics show`."""
    out: dict[str, Any] = {"profile": profile}
    for dataset in DATASETS:
        out[dataset] = {method: headline(dataset, method) for method in METHODS}
    comps = comps if comps is not None else {"cifar10": comparisons("cifar10")}
    out["comparisons"] = _jsonable(comps)
    return write_public(REPORTS / "metrics.json", json.dumps(out, indent=1))
