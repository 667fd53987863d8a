"""Tables 1, 2, 7 and 9: accuracy, robustness (AutoAttack) and generation (IS, FID, KID) of our
models beside the paper's numbers, with the rows the paper quotes from other work."""

from __future__ import annotations

from typing import Any

from dualat import paper_values
from dualat.config import DATASETS, METHODS
from dualat.records import NotComputed
from dualat.reports.provenance import origin, record_architecture, row_name
from dualat.reports.reading import percent, record, scaled, value
from dualat.reports.uncertainty import binomial_se
from dualat.reports.verdicts import quoted, row
from dualat.reports.vocabulary import DATASET_NAMES, METHOD_NAMES, quantity


def fid_kid_rows(name: str, gen: Any, mode: str, paper_fid: Any, paper_std: Any = None) -> list[dict]:
    """FID (± its std) and KID ×10³ (± std over subsets) of one generation mode."""
    note = f"paper ± {paper_std:g}" if paper_std else ""
    kid = value(gen, f"kid_{mode}")
    return [
        row(name, quantity("fid", mode), paper_fid, value(gen, f"fid_{mode}"), note, tol="fid",
            std=value(gen, f"fid_{mode}_std")),
        row(name, quantity("kid", mode), None, scaled(value(kid, "mean"), 1e3), kind="info",
            std=scaled(value(kid, "std"), 1e3)),
    ]  # fmt: skip


def fid_mode_rows(name: str, gen: Any, mode: str) -> list[dict]:
    """The `mode` FID (± std over seeds) of every FID mode of the record (`fid_modes`), each with
    its protocol: the same samples scored by each implementation (none for a one-mode record)."""
    modes = value(gen, "fid_modes")
    if not isinstance(modes, dict) or len(modes) < 2:
        return []
    return [
        row(name, quantity(f"fid_{m}", mode), None, value(r, f"fid_{mode}"), value(r, "protocol"), kind="info",
            std=value(r, f"fid_{mode}_std"))
        for m, r in modes.items()
    ]  # fmt: skip


def control_rows(dataset: str) -> list[dict]:
    """The seed images x0 themselves against the reference set: the floor a sampler must beat."""
    gen = record(dataset, "dualat", "generation")
    name = f"{DATASET_NAMES[dataset]} seed images x0 (control)"
    kid = value(gen, "control", "kid")
    return [
        row(name, quantity("fid"), None, value(gen, "control", "fid"), "same seeds, no sampling", kind="info"),
        row(name, quantity("kid"), None, scaled(value(kid, "mean"), 1e3), kind="info",
            std=scaled(value(kid, "std"), 1e3)),
    ]  # fmt: skip


def _accuracy_row(name: str, key: str, paper: Any, p: Any, n: Any, note: str, label: str | None = None) -> dict:
    """One accuracy row (%): ours ± its binomial standard error over the n images evaluated;
    `label`: the quantity shown (default `key`, which also names the tolerance)."""
    se = binomial_se(p, n)
    return row(name, quantity(label or key), paper, percent(p), note, tol=key, n=n if isinstance(n, int) else None,
               std=100 * se if se is not None else NotComputed("no image count n in the record"))  # fmt: skip


def robust_key(dataset: str) -> str:
    """The quantity of a robust accuracy on `dataset`, naming its threat model (L2, Table 4's eps)."""
    return "robust_acc_rin" if dataset == "rin" else "robust_acc"


def accuracy_rows(name: str, acc: Any, paper: dict, notes: dict, dataset: str = "cifar10") -> list[dict]:
    """Clean accuracy (on `n_test` images) and AutoAttack accuracy (on `autoattack.n`) in %, each
    ± its binomial standard error, beside the paper's `paper` entry; the robust row's label names
    the threat model of `dataset`."""
    clean, n_test = value(acc, "clean_acc"), value(acc, "n_test")
    robust, n_aa = value(acc, "autoattack", "robust_acc"), value(acc, "autoattack", "n")
    return [
        _accuracy_row(name, "clean_acc", paper.get("clean_acc"), clean, n_test, notes.get("clean_acc", "")),
        _accuracy_row(
            name, "robust_acc", paper.get("robust_acc"), robust, n_aa, notes.get("robust_acc", ""), robust_key(dataset)
        ),  # fmt: skip
    ]


def table_accuracy_generation(dataset: str, paper: dict, paper_std: bool = True) -> list[dict]:
    """Every method's accuracy, IS (where the paper has one) and conditional FID/KID, then the
    control. `paper_std`: the Dual-AT reference values are the paper's (with its ± over runs)."""
    rows = []
    for method in METHODS:
        acc, gen = record(dataset, method, "accuracy"), record(dataset, method, "generation")
        ref = paper.get(method, {})
        std = paper_values.PAPER_STD.get(dataset, {}) if method == "dualat" and paper_std else {}
        name = row_name(dataset, method, "accuracy")
        notes = {k: f"paper ± {v:g}" for k, v in std.items()}
        rows += accuracy_rows(name, acc, ref, notes, dataset)
        if "inception_score" in ref:
            rows.append(row(name, quantity("inception_score"), ref["inception_score"], value(gen, "inception_score"),
                            notes.get("inception_score", ""), tol="inception_score"))  # fmt: skip
        rows += fid_kid_rows(name, gen, "conditional", ref.get("fid"), std.get("fid"))
        rows += fid_mode_rows(name, gen, "conditional")
    return rows + control_rows(dataset)


def _quoted_rows(setting: str, paper: dict, robust: str = "robust_acc_unstated") -> list[dict]:
    """Rows of a model the paper quotes; its robust accuracy under `robust` (by default: threat
    model not stated, never beside our L2 numbers under their label)."""
    return [quoted(setting, quantity(robust if key == "robust_acc" else key), v) for key, v in paper.items()]


def table1(profile: str = "paper") -> list[dict]:
    """Table 1: CIFAR-10, our three models against the reference values of `profile`
    (paper_values.TABLE1_BY_PROFILE: the paper's, or the T=50 configuration's), then the hybrid
    and generative models the paper quotes."""
    reference = paper_values.TABLE1_BY_PROFILE.get(profile, paper_values.TABLE1)
    rows = table_accuracy_generation("cifar10", reference, paper_std=reference is paper_values.TABLE1)
    if reference is not paper_values.TABLE1:
        rows = [r | {"note": f"reference: {paper_values.REFERENCE_SOURCE[profile]}"} if r["setting"] == "CIFAR-10 Dual-AT"
                and r["paper"] is not None else r for r in rows]  # fmt: skip
    for name, ref in paper_values.TABLE1_QUOTED.items():
        rows += _quoted_rows(f"Hybrid: {name}", ref)
    for mode, models in paper_values.TABLE1_GENERATIVE.items():
        for name, ref in models.items():
            rows += _quoted_rows(f"Generative ({mode}): {name}", ref)
    return rows


def table2() -> list[dict]:
    """Table 2: CIFAR-100 and RestrictedImageNet, with the rows the paper quotes."""
    rows = []
    for dataset in ("cifar100", "rin"):
        rows += table_accuracy_generation(dataset, paper_values.TABLE2[dataset])
        for name, ref in paper_values.TABLE2_QUOTED.get(dataset, {}).items():
            rows += _quoted_rows(f"{DATASET_NAMES[dataset]} {name}", ref)
    return rows


def table7() -> list[dict]:
    """Table 7: our RATIO models (architecture from their records) against the paper's, and the
    RATIO rows the paper quotes."""
    rows = []
    for dataset, ref in paper_values.TABLE7.items():
        acc = record(dataset, "ratio", "accuracy")
        arch = record_architecture(dataset, "ratio", "accuracy")
        name = f"{row_name(dataset, 'ratio', 'accuracy')}, this run" + (f" ({arch})" if arch else "")
        paper_arch = paper_values.TABLE7_ARCH[dataset]
        note = f"paper ({paper_arch}): " + ("official checkpoint" if dataset == "cifar10" else "reproduced")
        rows += accuracy_rows(name, acc, ref, {"clean_acc": note, "robust_acc": note}, dataset)
        for label, (arch, clean, robust) in paper_values.TABLE7_QUOTED[dataset].items():
            setting = f"{DATASET_NAMES[dataset]} {METHOD_NAMES['ratio']}, {label} ({arch})"
            rows += _quoted_rows(setting, {"clean_acc": clean, "robust_acc": robust}, robust_key(dataset))
    return rows


def table9() -> list[dict]:
    """Table 9: Dual-AT's conditional and unconditional FID (and KID), with the control."""
    rows = []
    for dataset in DATASETS:
        gen = record(dataset, "dualat", "generation")
        external = origin(dataset, "dualat", "generation")[0] == "external"
        name = DATASET_NAMES[dataset] + (" (external model)" if external else "")
        for mode, per in paper_values.TABLE9.items():
            rows += fid_kid_rows(name, gen, mode, per[dataset])
            rows += fid_mode_rows(name, gen, mode)
        rows += control_rows(dataset)
    return rows
