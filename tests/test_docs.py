"""The documentation is checked like code: its tables are well formed, and the commands it shows
work."""

import os
import re
import shutil
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


def _readme_commands() -> list[str]:
    """The command lines of the README's ```bash blocks, without their trailing comments."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


CI_COMMANDS = 2  # the quick start: .ci/run runs both verbatim


def test_every_readme_command_is_run_by_ci_or_by_this_file():
    commands = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands[:CI_COMMANDS]:
        assert command in ci, f".ci/run does not run the README command {command!r}"
    dvc = [c for c in commands[CI_COMMANDS:] if c.startswith("dvc ")]
    assert dvc == commands[CI_COMMANDS:], "a README command is neither in .ci/run nor run by this file"
    assert len(dvc) >= 5  # the profile examples and the three comparison commands


STUB_STAGE = """import json, yaml
p = yaml.safe_load(open("params.yaml"))
q = p["quick"]["cifar10"]
json.dump({"ece_bins": q["evaluate"]["ece_bins"], "T_max": q["stage2"]["sampler"]["T_max"],
           "profile": 1 if p["profile"] == "paper" else 0}, open("metrics.json", "w"))
json.dump([{"step": s, "fid": 100.0 / (s + 1) + q["evaluate"]["ece_bins"]} for s in range(3)], open("curves.json", "w"))
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for dvc exp run")
def test_readme_dvc_commands_run_on_a_stub_pipeline(tmp_path):
    """The README's dvc commands, verbatim, in a repository with the real params.yaml and one
    stage that reads it and writes a metrics file and a curve: each exits 0, `-S` sets what it
    names, and the comparison prints both experiments' numbers and curves."""
    dvc_bin = Path(sys.executable).parent
    if not (dvc_bin / "dvc").exists():
        pytest.skip("dvc is not installed beside this Python")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "stage.py").write_text(STUB_STAGE)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  stub:\n    cmd: python stage.py\n    deps: [stage.py]\n    params: [profile, quick.cifar10]\n"
        "    metrics: [{metrics.json: {cache: false}}]\n    plots: [{curves.json: {x: step, y: fid, cache: false}}]\n"
    )
    env = {**os.environ, "PATH": f"{dvc_bin}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(command: str) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    sh("git init -q && dvc init -q && git add -A && git commit -qm init")
    outputs = {c: sh(c) for c in _readme_commands()[CI_COMMANDS:]}
    diff = next(out for c, out in outputs.items() if c.startswith("dvc metrics diff"))
    assert "ece_bins" in diff and "15" in diff and "10" in diff  # base vs the experiment with -S ece_bins=10
    curves = next(c for c in outputs if "plots diff" in c).split("> ")[-1].strip()
    assert "base" in (tmp_path / curves).read_text()


def test_grep_for_an_equation_finds_its_code():
    # README: grep -rn "Eq. 9" dualat
    found = subprocess.run(["grep", "-rn", "Eq. 9", "dualat"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0 and "losses.py" in found.stdout, found.stdout


def test_python_entry_points_of_the_readme_answer_help():
    for module in ("dualat.proxy",):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and "usage" in done.stdout, done.stderr
