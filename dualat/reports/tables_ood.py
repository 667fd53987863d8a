"""Tables 10-12: OOD detection (AUROC of clean and of adversarially perturbed OOD inputs) of
RATIO (max p(y|x)) and Dual-AT (max p(y|x) and -E(x), Eq. 4), beside the paper's."""

from __future__ import annotations

from typing import Any

import numpy as np

from dualat import paper_values
from dualat.config import METHODS, load
from dualat.records import NotComputed
from dualat.reports.provenance import row_name
from dualat.reports.reading import RESULTS, is_number, record, value
from dualat.reports.uncertainty import delong_se, hanley_mcneil_se
from dualat.reports.verdicts import quoted, row
from dualat.reports.vocabulary import SCORE_NAMES, dataset_name, quantity

# The paper's columns: {column of paper_values.OOD: (method, score key of our OOD record)}.
OOD_COLUMNS = {
    "ratio": ("ratio", "max_prob"),
    "dualat_max_prob": ("dualat", "max_prob"),
    "dualat_neg_energy": ("dualat", "neg_energy"),
}
# The two AUROC columns of each score, in the paper's order.
INPUTS = ("clean", "adversarial")


def ood_set_used(cfg, paper_set: str) -> str:
    """The set this run used for a paper OOD set (Tiny-ImageNet stands in for ImageNetOD)."""
    if (
        paper_set == "imagenet_od"
        and "imagenet_od" not in cfg.evaluate.ood_sets
        and "tinyimagenet32" in cfg.evaluate.ood_sets
    ):
        return "tinyimagenet32"
    return paper_set


def scores_file(dataset: str, method: str) -> dict[str, np.ndarray]:
    """The OOD scores an evaluation saved (results/<dataset>/<method>/ood/scores.npz; keys as
    `evaluation.ood_detection` writes them), {} when there are none."""
    path = RESULTS / dataset / method / "ood" / "scores.npz"
    if not path.exists():
        return {}
    with np.load(path) as f:
        return dict(f)


def auroc_uncertainty(auc: Any, rec: Any, scores: dict, used: str, score: str, inputs: str) -> dict:
    """{std, n, how} of one AUROC cell: DeLong's standard error from the saved scores, else
    Hanley-McNeil's from the AUROC and the set sizes; n reads "<test> test + <OOD> OOD"."""
    n_id, n_ood = value(rec, "n_id"), value(rec, "sets", used, "n")
    if not (is_number(auc) and isinstance(n_id, int) and isinstance(n_ood, int)):
        return {"std": NotComputed("no set sizes n in the record"), "n": None}
    s_in, s_out = scores.get(f"id/{score}"), scores.get(f"{used}/{score}/{inputs}")
    if s_in is not None and s_out is not None and len(s_in) == n_id and len(s_out) == n_ood:
        std, how = delong_se(s_in, s_out), ""
    else:
        std, how = hanley_mcneil_se(auc, n_id, n_ood), "± Hanley-McNeil (scores not saved)"
    return {"std": std, "n": f"{n_id} test + {n_ood} OOD", "how": how}


def table_ood(dataset: str) -> list[dict]:
    """Table 10, 11 or 12 for in-distribution `dataset`: one row per OOD set, score and input,
    each AUROC ± its standard error with the sizes of both sets."""
    rows = []
    records = {m: record(dataset, m, "ood") for m in METHODS}
    scores = {m: scores_file(dataset, m) for m in METHODS}
    cfg = load(dataset=dataset)
    for ood_set, ref in paper_values.OOD[dataset].items():
        used = ood_set_used(cfg, ood_set)
        stand_in = "" if used == ood_set else f"offline stand-in for {dataset_name(ood_set)}: {dataset_name(used)}"
        for column, (method, score) in OOD_COLUMNS.items():
            setting = f"{dataset_name(ood_set)} | {row_name(dataset, method, 'ood', with_dataset=False)} ({SCORE_NAMES[score]})"
            for i, inputs in enumerate(INPUTS):
                ours = value(records[method], "sets", used, score, inputs)
                more = auroc_uncertainty(ours, records[method], scores[method], used, score, inputs)
                note = "; ".join(x for x in (stand_in, more.pop("how", "")) if x)
                rows.append(row(setting, quantity(inputs), ref[column][i], ours, note, tol="auroc", **more))
        if dataset in paper_values.OOD_JEM:
            jem = paper_values.OOD_JEM[dataset][ood_set] or (None, None)
            # [14]'s own evaluation of JEM (Augustin et al.), not our attack: its adversarial AUROC
            # comes from [14]'s OOD attack, which the paper does not restate
            setting = f"{dataset_name(ood_set)} | JEM (from [14]; adversarial: [14]'s attack, not ours)"
            rows += [quoted(setting, quantity(inputs), jem[i]) for i, inputs in enumerate(INPUTS)]
    return rows
