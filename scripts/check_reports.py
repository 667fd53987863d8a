"""CI check: every table (1-12) and figure (1-8) exists and reports/index.html links them all;
the index has its Comparisons, per-model images and AutoAttack-warnings sections; every table has
a verdict column and names its quantities in the report's one vocabulary
(`dualat.reports.vocabulary`); reports/metrics.json holds the comparisons; a profile other than
`paper` shows no difference column in the tables of results (a quick number minus the paper's
means nothing); every measured accuracy and AUROC of Tables 1, 2, 7 and 10-12 reads
"x ± s (n = N)"; no file under reports/ names a machine folder (the repository root, the data
root, the Python environment, the home folder); the three CIFAR-10 models each have a model card, a
RobustBench-format JSON, SHA256SUMS and safetensors weights under reports/models/, linked from the index."""

import csv
import json
import os
import sys
from pathlib import Path

from dualat.paper_values import PAPER_PROFILES
from dualat.reports.index import CARD_FILES
from dualat.reports.uncertainty import PM_N
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


def model_cards(index: str) -> list[str]:
    """The card files of every CIFAR-10 model whose accuracy record names a checkpoint that is
    here (the pipeline's three models; reports/models/dualat-cifar10-<method>/), linked."""
    problems = []
    for method in ("standard_at", "ratio", "dualat"):
        rec = Path("results") / "cifar10" / method / "accuracy" / "accuracy.json"
        ckpt = (json.loads(rec.read_text()).get("checkpoint") or {}).get("path") if rec.is_file() else None
        if not ckpt or not Path(ckpt).is_file():
            continue
        for name in CARD_FILES:
            rel = f"models/dualat-cifar10-{method.replace('_', '-')}/{name}"
            if not (REPORTS / rel).exists():
                problems.append(rel)
            if rel not in index:
                problems.append(f"index link to {rel}")
    return problems


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
        if profile not in PAPER_PROFILES and n in RESULT_TABLES and "<th>difference</th>" in text:
            problems.append(f"no difference column in tables/table{n}.html (profile {profile})")
        outside = sorted({row["quantity"] for row in csv.DictReader(table.open())} - names) if table.exists() else []
        if outside:
            problems.append(f"quantities outside the report vocabulary in tables/table{n}.csv: {outside}")
    return problems


# Tables whose accuracy and AUROC cells must carry their ± and n.
UNCERTAIN_TABLES = (1, 2, 7, 10, 11, 12)


def uncertainty_cells() -> list[str]:
    """Measured accuracy/AUROC cells (not "not computed", not quoted) that do not read "x ± s (n = N)"."""
    problems = []
    for n in UNCERTAIN_TABLES:
        table = REPORTS / "tables" / f"table{n}.csv"
        if not table.exists():
            continue
        for row in csv.DictReader(table.open()):
            measured = "accuracy" in row["quantity"] or "AUROC" in row["quantity"]
            if measured and not row["ours"].startswith(("not computed", "quoted by the paper")):
                if not PM_N.match(row["ours"]):
                    problems.append(
                        f"tables/table{n}.csv: {row['setting']}, {row['quantity']}: {row['ours']!r} has no ± and n"
                    )
    return problems


def machine_folders() -> list[str]:
    """Absolute folders of this machine that no report file may name."""
    folders = [Path.cwd().resolve(), Path(sys.prefix), Path.home()]
    if os.environ.get("DUALAT_DATA"):
        folders.append(Path(os.environ["DUALAT_DATA"]).resolve())
    return sorted({str(f) + "/" for f in folders if f != Path("/")} | {str(Path.cwd().resolve())})


def machine_paths() -> list[str]:
    """Report files (text: HTML, CSV, JSON, notebooks) that name a folder of `machine_folders`."""
    folders, problems = machine_folders(), []
    for path in sorted(REPORTS.rglob("*")):
        if path.is_file() and path.suffix in (".html", ".csv", ".json", ".ipynb", ".md", ".txt"):
            text = path.read_text(errors="replace")
            found = [f for f in folders if f in text]
            if found:
                problems.append(f"{path} names the machine folder {found[0]}")
    return problems


def main() -> int:
    index = (REPORTS / "index.html").read_text() if (REPORTS / "index.html").exists() else ""
    metrics_path = REPORTS / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    problems = files_and_links(index) + table_contents(metrics.get("profile", "paper"))
    problems += uncertainty_cells() + machine_paths() + model_cards(index)
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
