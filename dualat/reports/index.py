"""reports/index.html, the page a reader opens first: profile, code revision, hardware, the proxy
run, the model comparisons, links to every table and figure, every model's calibration diagram and
counterfactual grid, AutoAttack's warnings and the executed notebooks with their wall-clock times.
`build` writes the whole report."""

from __future__ import annotations

import html
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from dualat.config import DATASETS, METHODS, read_params
from dualat.records import NotComputed, revision_text
from dualat.reports.comparisons import comparison_text, comparisons
from dualat.reports.figures import FIGURES
from dualat.reports.metrics_file import write_metrics
from dualat.reports.model_cards import write_model_cards
from dualat.reports.paths import write_public
from dualat.reports.proxy_section import proxy_section
from dualat.reports.reading import REPORTS, RESULTS, reason_note, record, short_reason, value
from dualat.reports.tables import PROFILE_TABLES, TABLES, autoattack_warnings, page, write_table
from dualat.reports.verdicts import verdict_rule
from dualat.reports.vocabulary import DATASET_NAMES, FIGURE_TITLES, METHOD_NAMES, TABLE_TITLES

# Per-model images the evaluation writes, linked from the index: {label: (group, file)}.
RECORD_IMAGES = {
    "calibration (reliability diagram)": ("accuracy", "reliability.png"),
    "counterfactuals": ("counterfactuals", "counterfactuals.png"),
}


def _stage_order(stem: str) -> tuple:
    """Sort key of an executed notebook: its number, then the datasets and methods in the
    pipeline's order (params.yaml's datasets, `config.METHODS`)."""
    number, _, tag = stem.partition("-")
    parts = tag.split("-") if tag else []
    rank = [DATASETS.index(p) if p in DATASETS else METHODS.index(p) if p in METHODS else 99 for p in parts]
    return (number, rank, stem)


def stage_times() -> list[dict]:
    """Wall-clock seconds and start of every executed notebook (papermill's own record), in the
    pipeline's order."""
    rows = []
    for path in sorted((REPORTS / "notebooks").glob("*.ipynb"), key=lambda p: _stage_order(p.stem)):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        rows.append(
            {
                "notebook": path.stem,
                "seconds": meta.get("duration"),
                "start": meta.get("start_time"),
                "html": f"notebooks/{path.stem}.html",
            }
        )
    return rows


def duration_text(seconds: Any) -> str:
    """Seconds as "42 s", "3 min 05 s" or "2 h 07 min"; "–" without a number."""
    if not isinstance(seconds, (int, float)):
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def start_text(stamp: Any) -> str:
    """papermill's ISO start time as "2026-11-25 10:11 UTC"; "–" without one."""
    if not isinstance(stamp, str) or len(stamp) < 16:
        return "–"
    return stamp[:10] + " " + stamp[11:16] + " UTC"


def hardware() -> str:
    """CPU, core count, torch's CPU threads, GPU and torch version of the machine building the
    report (CPU training is bit-identical only at the same thread count: docs/reports.md)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads), {gpu}, torch {torch.__version__}"
    )


def _why_missing(rec: dict | NotComputed, path: Path) -> str:
    """The record's own not-computed reason for a missing image, else that the file is missing."""
    if isinstance(rec, NotComputed):
        return rec.reason
    reasons = (value(v) for v in rec.values())
    return next((r.reason for r in reasons if isinstance(r, NotComputed)), f"{path} was not produced")


def record_images(out: Path = REPORTS / "figures" / "records") -> list[dict]:
    """Copies every dataset's and method's reliability diagram and counterfactual grid into
    reports/figures/records/ (a report output); one entry per image: its link or why not."""
    entries = []
    for dataset in DATASETS:
        for method in METHODS:
            for label, (group, name) in RECORD_IMAGES.items():
                src = RESULTS / dataset / method / group / name
                entry = {"dataset": dataset, "method": method, "what": label, "link": None, "reason": None}
                if src.exists():
                    out.mkdir(parents=True, exist_ok=True)
                    dst = out / f"{dataset}_{method}_{name}"
                    shutil.copyfile(src, dst)
                    entry["link"] = f"figures/records/{dst.name}"
                else:
                    entry["reason"] = _why_missing(record(dataset, method, group), src)
                entries.append(entry)
    return entries


def _list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def _table_links(tables: dict[int, tuple[Path, Path]]) -> str:
    return "".join(
        f"<li><a href='tables/{h.name}'>Table {n}</a> (<a href='tables/{c.name}'>csv</a>): {html.escape(TABLE_TITLES[n])}</li>"
        for n, (c, h) in sorted(tables.items())
    )


def _figure_links(figures: dict[int, Path]) -> str:
    return "".join(
        f"<li><a href='figures/{p.name}'>Figure {n}</a>: {html.escape(FIGURE_TITLES[n])}<br><img src='figures/{p.name}' width='600'></li>"
        for n, p in sorted(figures.items())
    )


def _notebook_rows(times: list[dict]) -> str:
    return "".join(
        f"<tr><td><a href='{html.escape(t['html'])}'>{html.escape(t['notebook'])}</a></td><td>{duration_text(t['seconds'])}</td><td>{start_text(t['start'])}</td></tr>"
        for t in times
    )


def _image_table(images: list[dict]) -> str:
    """One row per record image: its link, or `not computed: <short> [n]` with footnote n below."""
    notes: dict[str, int] = {}
    rows = ""
    for entry in images:
        if entry["link"]:
            cell = f"<a href='{html.escape(entry['link'])}'>{html.escape(entry['link'])}</a>"
        else:
            n = notes.setdefault(entry["reason"], len(notes) + 1)
            cell = f"<span class='nc'>not computed: {html.escape(short_reason(entry['reason']))} [{n}]</span>"
        rows += (
            f"<tr><td>{html.escape(DATASET_NAMES[entry['dataset']])}</td><td>{html.escape(METHOD_NAMES[entry['method']])}</td>"
            f"<td>{html.escape(entry['what'])}</td><td>{cell}</td></tr>"
        )
    footnotes = "".join(f"<p class='note'>[{n}] {html.escape(reason_note(r))}</p>" for r, n in notes.items())
    return f"<table><tr><th>dataset</th><th>method</th><th>image</th><th>file</th></tr>{rows}</table>{footnotes}"


# Files of each model card folder (reports/models/<name>/, `model_cards`), linked from the index.
CARD_FILES = ("README.md", "robustbench.json", "SHA256SUMS", "model.safetensors")


def _card_table(cards: list[dict]) -> str:
    """One row per model: links to its card, RobustBench JSON, hashes and weights, or why none."""
    rows = ""
    for c in cards:
        if c["folder"] is not None:
            rel = f"models/{c['name']}"
            cell = " · ".join(f"<a href='{html.escape(rel)}/{f}'>{f}</a>" for f in CARD_FILES)
        else:
            cell = f"<span class='nc'>not written: {html.escape(c['reason'])}</span>"
        rows += (
            f"<tr><td>{html.escape(DATASET_NAMES[c['dataset']])}</td><td>{html.escape(METHOD_NAMES[c['method']])}</td>"
            f"<td>{cell}</td></tr>"
        )
    note = "<p class='note'>The RobustBench JSON files are entry candidates, not RobustBench results.</p>"
    return f"<table><tr><th>dataset</th><th>method</th><th>files</th></tr>{rows}</table>{note}"


def write_index(
    profile: str,
    tables: dict[int, tuple[Path, Path]],
    figures: dict[int, Path],
    comps: dict | None = None,
    images: list[dict] | None = None,
    cards: list[dict] | None = None,
) -> Path:
    """reports/index.html linking `tables` and `figures` ({number: path}), with the comparisons
    (computed when not given), the record images (copied when not given) and the model cards
    (`model_cards.write_model_cards`; none listed when not given)."""
    comps = comps if comps is not None else {"cifar10": comparisons("cifar10")}
    images = images if images is not None else record_images()
    times = stage_times()
    total = sum(t["seconds"] or 0 for t in times)
    comp_html = "".join(
        f"<h3>{html.escape(DATASET_NAMES[d])}</h3>{_list(comparison_text(profile, c))}" for d, c in comps.items()
    )
    body = (
        f"<p>profile <b>{html.escape(profile)}</b> · code revision <code>{html.escape(revision_text())}</code> · "
        f"built {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · {html.escape(hardware())} · "
        f"notebooks' wall-clock total {duration_text(total)}</p>"
        f"<p>{html.escape(verdict_rule(profile))}</p>"
        f"{proxy_section()}<h2>Comparisons</h2>{comp_html}"
        f"<h2>Tables</h2><ul>{_table_links(tables)}</ul><h2>Figures</h2><ul>{_figure_links(figures)}</ul>"
        f"<h2>Model cards, RobustBench entry candidates and weights</h2>{_card_table(cards or [])}"
        f"<h2>Calibration diagrams and counterfactual grids of every model</h2>{_image_table(images)}"
        f"<h2>AutoAttack warnings</h2>{_list(autoattack_warnings() or ['no accuracy record yet'])}"
        "<h2>Executed notebooks (pipeline stages, in order)</h2><table><tr><th>stage</th><th>wall-clock</th><th>started</th></tr>"
        f"{_notebook_rows(times)}</table>"
    )
    return write_public(REPORTS / "index.html", page("Dual-AT reproduction report", body))


def build(profile: str | None = None) -> Path:
    """Write every table, figure, reports/metrics.json and reports/index.html; return the index."""
    profile = profile or read_params()["profile"]
    tables = {n: write_table(n, fn(profile) if n in PROFILE_TABLES else fn(), profile) for n, fn in TABLES.items()}
    figures = {n: fn(profile) for n, fn in FIGURES.items()}
    comps = {"cifar10": comparisons("cifar10")}
    write_metrics(profile, comps)
    cards = write_model_cards()
    return write_index(profile, tables, figures, comps, cards=cards)
