"""Where a table row's model came from, read from its record: trained here, external (a user's or
a released file, marked in the row itself) or nothing trained (its stage did not compute); the
architecture the record was evaluated with; one short source line per model with a link to the
record, which holds the full provenance."""

from __future__ import annotations

from typing import Any

from dualat.records import NotComputed
from dualat.reports.reading import record, record_extra, record_full, record_path, short_reason, value
from dualat.reports.vocabulary import METHOD_NAMES, model_name

ARCH_NAMES = {"resnet50": "ResNet-50"}


def architecture(model: Any) -> str | None:
    """The paper's name of a record's `config.model` ({arch, depth, widen_factor}), e.g. WRN-34-10."""
    if not isinstance(model, dict) or "arch" not in model:
        return None
    if model["arch"] == "wrn":
        return f"WRN-{model.get('depth')}-{model.get('widen_factor')}"
    return ARCH_NAMES.get(model["arch"], str(model["arch"]))


def record_architecture(dataset: str, method: str, group: str) -> str | None:
    """The architecture of the model a record evaluated (from the record's config), or None."""
    rec = record_full(dataset, method, group)
    return architecture(rec.get("config", {}).get("model")) if rec else None


def nothing_computed(metrics: Any) -> NotComputed | None:
    """The reason when a record holds no number at all (every value not computed), else None."""
    if isinstance(metrics, NotComputed):
        return metrics
    if not isinstance(metrics, dict) or not metrics:
        return NotComputed("the record holds no metrics")
    reasons = [value(metrics, key) for key in metrics]
    if all(isinstance(r, NotComputed) for r in reasons):
        return reasons[0]
    return None


def origin(dataset: str, method: str, group: str) -> tuple[str, str]:
    """(kind, text): kind "external", "trained" or "none" (no record, or nothing computed) and a
    short description of where the evaluated model came from."""
    metrics = record(dataset, method, group)
    why = nothing_computed(metrics)
    source = record_extra(dataset, method, group).get("model_source") or ""
    if isinstance(source, str) and source.startswith("external"):
        return "external", "external model" + ("" if why is None else f" (not evaluated: {short_reason(why.reason)})")
    if why is not None:
        return "none", f"no model evaluated: {short_reason(why.reason)}"
    file = record_extra(dataset, method, group).get("model_file") or ""
    return "trained", f"trained here ({str(file).split(':', 1)[0]})" if file else "trained here"


def row_name(dataset: str, method: str, group: str, with_dataset: bool = True) -> str:
    """The model's name in a table row (e.g. CIFAR-10 Dual-AT; the method alone without
    `with_dataset`), marked "(external model)" when the record evaluated a file not trained by
    this pipeline."""
    kind, _ = origin(dataset, method, group)
    name = model_name(dataset, method) if with_dataset else METHOD_NAMES[method]
    return name + (" (external model)" if kind == "external" else "")


def source_line(dataset: str, method: str, group: str) -> str | None:
    """One short line: the model's origin and the record that holds its full provenance (a path
    relative to the repository root); None without a record."""
    if not record_path(dataset, method, group).exists():
        return None
    _, text = origin(dataset, method, group)
    return f"{model_name(dataset, method)}: {text}; provenance in {record_path(dataset, method, group).as_posix()}"
