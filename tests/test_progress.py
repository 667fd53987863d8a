"""Progress reporting: live tqdm bars when watched, a few lines when recorded (issue 11, point 11)."""

import sys
import warnings
from pathlib import Path

import pytest
from tqdm.std import tqdm

from dualat import progress

ROOT = Path(__file__).resolve().parents[1]


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_recorded_loop_of_1000_steps_prints_at_most_six_lines(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    seen = list(progress.bar(range(1000), desc="pgd"))
    assert seen == list(range(1000))  # every item, in order
    lines = _lines(capsys)
    assert 2 <= len(lines) <= 6, lines
    assert lines[0].startswith("pgd: 0/1000") and lines[-1].startswith("pgd: 1000/1000 (100%)")


def test_recorded_bar_updated_by_hand_from_a_resumed_step(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    bar = progress.bar(total=1000, initial=300, desc="stage 2")
    for step in range(300, 1000):
        bar.update(1)
        if step == 600:
            bar.set_postfix(T=3, robust="0.412")
    bar.close()
    bar.close()  # a second close prints nothing
    lines = _lines(capsys)
    assert len(lines) <= 6 and lines[0].startswith("stage 2: 300/1000")
    assert lines[-1].startswith("stage 2: 1000/1000") and lines[-1].endswith("T=3, robust=0.412")


def test_last_line_shows_the_values_set_after_the_last_step(capsys, monkeypatch):
    """A training loop evaluates after its last step (bookkeeping: advance, evaluate, finish):
    the closing line carries that evaluation's values, not the previous one's."""
    monkeypatch.setenv(progress.ENV, "lines")
    bar = progress.bar(total=4, desc="stage 2")
    for step in range(4):
        bar.update(1)
        bar.set_postfix(T=step, fid=float(100 - step))
    bar.close()
    lines = _lines(capsys)
    assert lines[-1].startswith("stage 2: 4/4 (100%)") and lines[-1].endswith("T=3, fid=97")
    assert lines[-2].endswith("T=2, fid=98")  # the line printed at 4/4, before the last values


def test_recorded_loop_that_stops_early_ends_with_its_count(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    for i in progress.bar(range(1000), desc="chunks"):
        if i == 599:
            break
    lines = _lines(capsys)
    assert len(lines) <= 6 and lines[-1].startswith("chunks: 599/1000")  # closed by the break
    for _ in progress.bar(iter(range(50)), desc="no total"):  # no length: start and end only
        pass
    assert [line.split(",")[0] for line in _lines(capsys)] == ["no total: 0", "no total: 50"]


@pytest.mark.parametrize("how", ["disabled", "off"])
def test_disabled_bar_prints_nothing_and_still_iterates(capsys, monkeypatch, how):
    monkeypatch.setenv(progress.ENV, "off" if how == "off" else "lines")
    bar = progress.bar(range(10), desc="x", enabled=how != "disabled")
    assert list(bar) == list(range(10))
    bar.update(1), bar.set_postfix(a=1), bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_live_mode_is_a_tqdm(monkeypatch):
    monkeypatch.setenv(progress.ENV, "live")
    bar = progress.bar(total=5, desc="stage 1")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


def test_unset_mode_follows_the_terminal_and_the_kernel(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert progress.mode() == "lines"  # piped to a file or a log
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert progress.mode() == "live"  # a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    assert progress.mode() == "live"  # JupyterLab
    monkeypatch.setenv(progress.ENV, "lines")
    assert progress.mode() == "lines"  # the variable wins (scripts/nb.py)
    monkeypatch.setenv(progress.ENV, "loud")
    with pytest.raises(ValueError, match="live, lines, off"):
        progress.mode()


def test_live_mode_in_a_kernel_without_ipywidgets_does_not_warn(monkeypatch):
    pytest.importorskip("IPython")
    monkeypatch.setenv(progress.ENV, "live")
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm.auto warns "IProgress not found" here
        bar = progress.bar(range(3), desc="x")
        assert list(bar) == [0, 1, 2] and isinstance(bar, tqdm)


def _execute(tmp_path, code: str) -> list:
    """The outputs of a one-cell notebook executed by papermill in a fresh kernel."""
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False)
    return nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs


LOOP = "from dualat import progress\nfor _ in progress.bar(range(1000), desc='loop'):\n    pass"


def test_executed_notebook_records_a_few_lines(tmp_path, monkeypatch):
    """What scripts/nb.py does: $DUALAT_PROGRESS=lines reaches the papermill kernel, whose loops
    then record a few lines and no warning."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv(progress.ENV, "lines")
    outputs = _execute(tmp_path, LOOP)
    assert [o.get("name") for o in outputs] == ["stdout"] * len(outputs)  # nothing on stderr
    text = "".join(o["text"] for o in outputs).splitlines()
    assert 2 <= len(text) <= 6 and text[-1].startswith("loop: 1000/1000"), text


def test_kernel_without_the_variable_shows_a_live_bar_without_the_ipywidgets_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv(progress.ENV, raising=False)
    outputs = _execute(tmp_path, LOOP)
    text = "".join(o.get("text", "") for o in outputs)
    assert "1000/1000" in text and "IProgress" not in text
