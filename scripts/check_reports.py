"""CI check: every table (1-12) and figure (1-8) exists and reports/index.html links them all."""

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
if missing:
    print("missing report files or links:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"reports complete: 12 tables, 8 figures, {len(list((reports / 'notebooks').glob('*.html')))} notebooks linked")
