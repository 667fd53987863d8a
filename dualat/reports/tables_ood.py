"""Tables 10-12: OOD detection (AUROC of clean and of adversarially perturbed OOD inputs) of
RATIO (max p(y|x)) and Dual-AT (max p(y|x) and -E(x), Eq. 4), beside the paper's."""

from __future__ import annotations

from dualat import paper_values
from dualat.config import METHODS, load
from dualat.reports.reading import record, value
from dualat.reports.verdicts import quoted, row
from dualat.reports.vocabulary import METHOD_NAMES, dataset_name, quantity

# The paper's columns: {column of paper_values.OOD: (method, score key of our OOD record)}.
OOD_COLUMNS = {
    "ratio": ("ratio", "max_prob"),
    "dualat_max_prob": ("dualat", "max_prob"),
    "dualat_neg_energy": ("dualat", "neg_energy"),
}
SCORE_NAMES = {"max_prob": "max p(y|x)", "neg_energy": "-E(x)"}
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


def table_ood(dataset: str) -> list[dict]:
    """Table 10, 11 or 12 for in-distribution `dataset`: one row per OOD set, score and input."""
    rows = []
    records = {m: record(dataset, m, "ood") for m in METHODS}
    cfg = load(dataset=dataset)
    for ood_set, ref in paper_values.OOD[dataset].items():
        used = ood_set_used(cfg, ood_set)
        note = "" if used == ood_set else f"offline stand-in for {dataset_name(ood_set)}: {dataset_name(used)}"
        for column, (method, score) in OOD_COLUMNS.items():
            setting = f"{dataset_name(ood_set)} | {METHOD_NAMES[method]} ({SCORE_NAMES[score]})"
            for i, inputs in enumerate(INPUTS):
                ours = value(records[method], "sets", used, score, inputs)
                rows.append(row(setting, quantity(inputs), ref[column][i], ours, note, tol="auroc"))
        if dataset in paper_values.OOD_JEM:
            jem = paper_values.OOD_JEM[dataset][ood_set] or (None, None)
            setting = f"{dataset_name(ood_set)} | JEM (from [14])"
            rows += [quoted(setting, quantity(inputs), jem[i]) for i, inputs in enumerate(INPUTS)]
    return rows
