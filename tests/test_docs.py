"""The documentation is checked like code: its tables are well formed, and the commands it shows
work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row; `\\|` and pipes inside `code` do not split."""
    line = re.sub(r"`[^`]*`", lambda m: m.group(0).replace("|", "¦"), line.replace("\\|", "¦"))
    return line.strip().strip("|").split("|")


def _tables(text: str) -> list[list[tuple[int, str]]]:
    tables, current = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("|"):
            current.append((number, line))
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_table_row_has_as_many_cells_as_its_header(doc):
    for table in _tables(doc.read_text()):
        width = len(_cells(table[0][1]))
        assert re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", table[1][1].strip()), f"{doc.name}:{table[1][0]}"
        for number, line in table:
            assert len(_cells(line)) == width, f"{doc.name}:{number}: {len(_cells(line))} cells, header {width}"


def test_grep_for_an_equation_finds_its_code():
    # README: grep -rn "Eq. 9" dualat
    found = subprocess.run(["grep", "-rn", "Eq. 9", "dualat"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0 and "losses.py" in found.stdout, found.stdout


def test_python_entry_points_of_the_readme_answer_help():
    for module in ("dualat.proxy",):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and "usage" in done.stdout, done.stderr
