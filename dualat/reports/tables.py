"""The twelve tables: which function builds each and which records it reads, and their pages:
tables/table<n>.csv (short not-computed reasons in the cells) and tables/table<n>.html (short
reasons with numbered footnotes of a reason code and one sentence, then the verdict rule, model and data sources, FID/KID protocols
and AutoAttack's warnings of the records the table reads)."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

from dualat.config import DATASETS, METHODS
from dualat.records import NotComputed
from dualat.reports.paths import write_public
from dualat.reports.provenance import source_line
from dualat.reports.reading import REPORTS, cell_text, is_number, reason_note, record, short_reason, value
from dualat.reports.tables_ood import table_ood
from dualat.reports.tables_results import table1, table2, table7, table9
from dualat.reports.tables_settings import table3, table4, table5, table6, table8
from dualat.reports.uncertainty import UNCERTAINTY_NOTE
from dualat.reports.verdicts import finish_rows, ours_text, verdict_rule
from dualat.reports.vocabulary import COLUMNS, TABLE_TITLES, model_name

TABLES = {
    1: table1, 2: table2, 3: table3, 4: table4, 5: table5, 6: table6, 7: table7, 8: table8, 9: table9,
    10: lambda: table_ood("cifar10"), 11: lambda: table_ood("cifar100"), 12: lambda: table_ood("rin"),
}  # fmt: skip
# Tables whose reference values depend on the profile that ran (called as fn(profile)).
PROFILE_TABLES = (1,)
# Records each table reads: {table: ((dataset, method, group), ...)}; their model and data
# sources and AutoAttack's warnings are listed under the table.
TABLE_RECORDS = {
    1: tuple(("cifar10", m, g) for m in METHODS for g in ("accuracy", "generation")),
    2: tuple((d, m, g) for d in ("cifar100", "rin") for m in METHODS for g in ("accuracy", "generation")),
    7: tuple((d, "ratio", "accuracy") for d in DATASETS),
    8: tuple((d, m, "generation") for m in ("dualat", "ratio") for d in DATASETS),
    9: tuple((d, "dualat", "generation") for d in DATASETS),
    10: tuple(("cifar10", m, "ood") for m in ("ratio", "dualat")),
    11: tuple(("cifar100", m, "ood") for m in ("ratio", "dualat")),
    12: tuple(("rin", m, "ood") for m in ("ratio", "dualat")),
}
PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}.nc{color:#a33}img{max-width:100%}"
    ".note{font-size:12px;margin:2px 0}"
)


def page(title: str, body: str) -> str:
    """A whole HTML page of the report: title, heading and `body` (HTML)."""
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{PAGE_STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"


def _cells(rows: list[dict], fields: list[str], marks: bool = True) -> tuple[list[list[str]], list[str]]:
    """Display text of each cell (ours as "x ± s (n = N)", `verdicts.ours_text`); a not-computed
    cell reads `not computed: <short reason> [n]` (without [n] when not `marks`, for the CSV) and
    footnote n (one per distinct reason) holds its code and one sentence."""
    notes: dict[str, int] = {}
    table = []
    for r in rows:
        line = []
        for key in fields:
            v = ours_text(r) if key == "ours" else r[key]
            if isinstance(v, NotComputed):
                n = notes.setdefault(v.reason, len(notes) + 1)
                line.append(f"not computed: {short_reason(v.reason)}" + (f" [{n}]" if marks else ""))
            else:
                line.append(cell_text(v) if v != "" else "")
        table.append(line)
    return table, [f"[{n}] {reason_note(reason)}" for reason, n in notes.items()]


# The CSV's last columns: our number, its standard error and n as plain numbers (for a program;
# the "ours" column shows them as one cell, "x ± s (n = N)").
CSV_NUMBERS = ("ours (number)", "± (number)", "n")


def _numbers(r: dict) -> list[Any]:
    """Our value, its ± and n as plain numbers ("" where the row has none)."""
    ours, std, n = r["ours"], r.get("std"), r.get("n")
    return [
        ours if is_number(ours) else "",
        std if is_number(std) and is_number(ours) else "",
        n if n is not None else "",
    ]


def _describe_value(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_describe_value(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_describe_value(x) for x in v)
    return str(v)


def model_sources(records: tuple[tuple[str, str, str], ...]) -> list[str]:
    """One short line per (dataset, method) with a record: where its model came from (trained
    here, external, or nothing evaluated) and the record holding the full provenance."""
    lines, seen = [], set()
    for dataset, method, group in records:
        if (dataset, method) in seen:
            continue
        line = source_line(dataset, method, group)
        if line is not None:
            seen.add((dataset, method))
            lines.append(line)
    return lines


def autoattack_warnings(datasets: tuple[str, ...] = DATASETS, methods: tuple[str, ...] = METHODS) -> list[str]:
    """AutoAttack's own sanity-check warnings (`metrics.autoattack.warnings`) of every accuracy
    record that exists, one line per model."""
    lines = []
    for dataset in datasets:
        for method in methods:
            acc = record(dataset, method, "accuracy")
            if isinstance(acc, NotComputed):
                continue
            got = value(acc, "autoattack", "warnings")
            if isinstance(got, NotComputed):
                text = f"not computed: {short_reason(got.reason)}"
            else:
                text = "; ".join(got) if got else "none"
            lines.append(f"AutoAttack warnings, {model_name(dataset, method)}: {text}")
    return lines


def fid_protocols(records: tuple[tuple[str, str, str], ...]) -> list[str]:
    """How each generation record's FID/KID was computed (`metrics.fid_protocol`)."""
    lines = []
    for dataset, method, group in records:
        gen = record(dataset, method, group) if group == "generation" else None
        if gen is None or isinstance(gen, NotComputed):
            continue
        protocol = value(gen, "fid_protocol")
        text = (
            f"not computed: {short_reason(protocol.reason)}"
            if isinstance(protocol, NotComputed)
            else _describe_value(protocol)
        )
        lines.append(f"FID/KID protocol, {model_name(dataset, method)}: {text}")
        modes = value(gen, "fid_modes")  # one line per FID mode: the protocol as one string
        for mode, per in modes.items() if isinstance(modes, dict) else ():
            lines.append(f"FID protocol, {model_name(dataset, method)}, {mode}: {value(per, 'protocol')}")
    return lines


def table_notes(number: int) -> list[str]:
    """Model/data sources, FID protocols and AutoAttack warnings of the records a table reads."""
    records = TABLE_RECORDS.get(number, ())
    notes = model_sources(records) + fid_protocols(records)
    accuracy = sorted({(d, m) for d, m, g in records if g == "accuracy"})
    for dataset, method in accuracy:
        notes += autoattack_warnings((dataset,), (method,))
    return notes


def _html_table(rows: list[dict], fields: list[str]) -> tuple[str, list[str]]:
    """The <table> of the rows (headers from vocabulary.COLUMNS) and its footnotes."""
    cells, footnotes = _cells(rows, fields)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"nc" if c.startswith("not computed") else ""}">{html.escape(c)}</td>' for c in line)
        + "</tr>"
        for line in cells
    )  # fmt: skip
    head = "".join(f"<th>{html.escape(COLUMNS[key])}</th>" for key in fields)
    return f"<table><tr>{head}</tr>{body}</table>", footnotes


def write_table(number: int, rows: list[dict], profile: str, out: Path = REPORTS / "tables") -> tuple[Path, Path]:
    """tables/table<n>.csv (short not-computed reasons in the cells) and tables/table<n>.html
    (short reasons with numbered footnotes, then the profile's verdict rule, what ± means, the
    models' sources and AutoAttack's warnings); no machine paths in either."""
    rows, fields = finish_rows(rows, profile)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out / f"table{number}.csv", out / f"table{number}.html"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([COLUMNS[key] for key in fields] + list(CSV_NUMBERS))
    cells = _cells(rows, fields, marks=False)[0]
    writer.writerows(line + _numbers(r) for line, r in zip(cells, rows))
    write_public(csv_path, text.getvalue())
    table, footnotes = _html_table(rows, fields)
    notes = [f"Profile {profile}. " + verdict_rule(profile), UNCERTAINTY_NOTE] + footnotes + table_notes(number)
    foot = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    write_public(html_path, page(f"Table {number}: {TABLE_TITLES[number]}", table + foot))
    return csv_path, html_path


def show_tables(numbers: tuple[int, ...] = tuple(TABLES)) -> None:
    """Display the written tables in a notebook."""
    from IPython.display import HTML, display  # lazy: only a notebook displays; scripts run without IPython

    for n in numbers:
        path = REPORTS / "tables" / f"table{n}.html"
        if path.exists():
            title = f"<h3>Table {n}: {html.escape(TABLE_TITLES[n])}</h3>"
            display(HTML(title + path.read_text().split("</h1>", 1)[-1]))
