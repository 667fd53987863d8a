"""CI check: every table (1-12) and figure (1-8) exists and reports/index.html links them all;
the index has its Comparisons, per-model images and AutoAttack-warnings sections; every table has
a verdict column; reports/metrics.json holds the comparisons; a profile other than `paper` shows no
difference column in the record tables."""

import json
import sys
from pathlib import Path

reports = Path("reports")
index = (reports / "index.html").read_text() if (reports / "index.html").exists() else ""
missing = []
for n in range(1, 13):
    for ext in ("csv", "html"):
        if not (reports / "tables" / f"table{n}.{ext}").exists():
            missing.append(f"tables/table{n}.{ext}")
    if f"tables/table{n}.html" not in index:
        missing.append(f"index link to tables/table{n}.html")
for n in range(1, 9):
    if not (reports / "figures" / f"figure{n}.png").exists():
        missing.append(f"figures/figure{n}.png")
    if f"figures/figure{n}.png" not in index:
        missing.append(f"index link to figures/figure{n}.png")
for nb in sorted((reports / "notebooks").glob("*.html")):
    if f"notebooks/{nb.name}" not in index:
        missing.append(f"index link to notebooks/{nb.name}")
if not index:
    missing.append("reports/index.html")
for section in (
    "<h2>Comparisons</h2>",
    "<h2>Calibration diagrams and counterfactual grids",
    "<h2>AutoAttack warnings</h2>",
):
    if index and section not in index:
        missing.append(f"index section {section}")
for n in range(1, 13):
    page = reports / "tables" / f"table{n}.html"
    if page.exists() and "<th>verdict</th>" not in page.read_text():
        missing.append(f"verdict column in tables/table{n}.html")
metrics_path = reports / "metrics.json"
metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
if "comparisons" not in metrics:
    missing.append("comparisons in reports/metrics.json")
table1 = reports / "tables" / "table1.html"
if metrics.get("profile", "paper") != "paper" and table1.exists() and "<th>difference</th>" in table1.read_text():
    missing.append(f"no difference column in tables/table1.html (profile {metrics['profile']})")
if missing:
    print("missing report files or links:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"reports complete: 12 tables, 8 figures, {len(list((reports / 'notebooks').glob('*.html')))} notebooks linked")
