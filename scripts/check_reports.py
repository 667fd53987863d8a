"""CI check: every table (1-12) and figure (1-8) exists and reports/index.html links them all;
the index has its Comparisons, per-model images and AutoAttack-warnings sections; every table has
a verdict column and names its quantities in the report's one vocabulary
(`dualat.reports.vocabulary`); reports/metrics.json holds the comparisons; a profile other than
`paper` shows no difference column in the tables of results (a quick number minus the paper's
means nothing)."""

import csv
import json
import sys
from pathlib import Path

from dualat.reports.vocabulary import QUANTITIES, quantity

REPORTS = Path("reports")
# Tables of our results only (no settings rows): no difference column outside the paper profile.
RESULT_TABLES = (1, 2, 7, 9, 10, 11, 12)
SECTIONS = ("<h2>Comparisons</h2>", "<h2>Calibration diagrams and counterfactual grids", "<h2>AutoAttack warnings</h2>")


def files_and_links(index: str) -> list[str]:
    """Tables, figures and notebooks that are missing or not linked from the index."""
    problems = [] if index else ["reports/index.html"]
    for n in range(1, 13):
        problems += [
            f"tables/table{n}.{ext}" for ext in ("csv", "html") if not (REPORTS / "tables" / f"table{n}.{ext}").exists()
        ]
        if f"tables/table{n}.html" not in index:
            problems.append(f"index link to tables/table{n}.html")
    for n in range(1, 9):
        if not (REPORTS / "figures" / f"figure{n}.png").exists():
            problems.append(f"figures/figure{n}.png")
        if f"figures/figure{n}.png" not in index:
            problems.append(f"index link to figures/figure{n}.png")
    for nb in sorted((REPORTS / "notebooks").glob("*.html")):
        if f"notebooks/{nb.name}" not in index:
            problems.append(f"index link to notebooks/{nb.name}")
    return problems + [f"index section {s}" for s in SECTIONS if index and s not in index]


def table_contents(profile: str) -> list[str]:
    """Verdict columns, the vocabulary of the quantity cells, and no difference column in a
    table of results outside the paper profile."""
    names = {quantity(k, mode) for k in QUANTITIES for mode in (None, "conditional", "unconditional")}
    problems = []
    for n in range(1, 13):
        page, table = REPORTS / "tables" / f"table{n}.html", REPORTS / "tables" / f"table{n}.csv"
        text = page.read_text() if page.exists() else ""
        if text and "<th>verdict</th>" not in text:
            problems.append(f"verdict column in tables/table{n}.html")
        if profile != "paper" and n in RESULT_TABLES and "<th>difference</th>" in text:
            problems.append(f"no difference column in tables/table{n}.html (profile {profile})")
        outside = sorted({row["quantity"] for row in csv.DictReader(table.open())} - names) if table.exists() else []
        if outside:
            problems.append(f"quantities outside the report vocabulary in tables/table{n}.csv: {outside}")
    return problems


def main() -> int:
    index = (REPORTS / "index.html").read_text() if (REPORTS / "index.html").exists() else ""
    metrics_path = REPORTS / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    problems = files_and_links(index) + table_contents(metrics.get("profile", "paper"))
    if "comparisons" not in metrics:
        problems.append("comparisons in reports/metrics.json")
    if problems:
        print("missing or wrong in the report:\n  " + "\n  ".join(problems))
        return 1
    print(
        f"reports complete: 12 tables, 8 figures, {len(list((REPORTS / 'notebooks').glob('*.html')))} notebooks linked"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
