"""Checkpoint files are untrusted input (issue 15, point 3): read with weights_only, nothing in a
file is executed, and a wrong file is named in one line, also through scripts/nb.py under DVC.
"""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from papermill.exceptions import PapermillExecutionError
from test_train import _model

from dualat import checkpoint, config, model_io
from dualat.checkpoint import CheckpointError
from dualat.config import ConfigError
from dualat.evaluation import classification
from dualat.models import NormalizedResNet50, WideResNet

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
LAYOUT = ROOT.parent.parent / "shared" / "wrn3410_state_dict_layout.json"


def _cfg(**overrides):
    return config.load(PARAMS, dataset="cifar10", profile="quick", overrides=overrides)


class _RunsCode:
    """Unpickling this calls open(marker, "w"): a file's bytes choosing a function to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, writer):
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"model": _model().state_dict(), "hook": _RunsCode(marker)}, path)
    else:  # a bare pickle stream, as the legacy format is
        path.write_bytes(pickle.dumps({"step": 1, "hook": _RunsCode(marker)}, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert not marker.exists()
    assert _one_line(err).startswith(f"{path}: refused, it holds Python objects (io.open) that could run code")
    with pytest.raises(CheckpointError):  # the loader every stage and notebook goes through
        model_io.load_model(_cfg(), path, source="evaluate.checkpoints.dualat")
    assert not marker.exists()
    with open(path, "rb") as f:  # the control: an unsafe load does run the file's code
        torch.load(f, weights_only=False) if writer == "torch.save" else pickle.load(f)
    assert marker.exists()


def test_project_checkpoints_hold_plain_types_only(tmp_path):
    from test_faults import _stage1

    _stage1(tmp_path / "run")
    files = sorted((tmp_path / "run").glob("*.pt"))
    assert {p.name for p in files} == {"best.pt", "final.pt", "last.pt"}
    for path in files:  # without the allowlist of files written earlier
        assert isinstance(torch.load(path, weights_only=True)["versions"]["torch"], str)


def test_a_checkpoint_written_with_a_torch_version_object_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": _model().state_dict(), "versions": {"torch": torch.__version__}}, path)
    assert type(torch.__version__) is not str  # TorchVersion: what earlier checkpoints stored
    assert checkpoint.load(path)["versions"]["torch"] == torch.__version__


def test_a_released_file_in_the_legacy_format_loads(tmp_path):
    """Checkpoints saved before PyTorch 1.6 are a bare pickle stream, not a zip: still weights_only."""
    model, path = _model(), tmp_path / "released.pt"
    state = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    model_io.check_file(_cfg(), path, "evaluate.checkpoints.ratio")  # mmap is skipped for this format
    loaded = model_io.load_model(_cfg(), path, source="evaluate.checkpoints.ratio")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_wrong_files_are_named_in_one_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes\n")
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(text, source="evaluate.checkpoints.dualat")
    assert _one_line(err) == f"{text}: not a PyTorch checkpoint"
    good = checkpoint.save(tmp_path / "best.pt", {"model": _model().state_dict()})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:  # the pipeline's own file: rerun its stage
        checkpoint.load(cut)
    assert _one_line(err) == f"{cut}: damaged or truncated PyTorch checkpoint; delete it and rerun its stage"
    with pytest.raises(CheckpointError) as err:  # a user's file: not advice to rerun a stage
        checkpoint.load(cut, source="evaluate.checkpoints.dualat")
    assert _one_line(err).endswith("download or copy it again")
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "gone.pt", source="evaluate.checkpoints.dualat")
    assert _one_line(err) == f"{tmp_path / 'gone.pt'} does not exist (evaluate.checkpoints.dualat)"


def test_architecture_is_read_off_the_shapes():
    assert model_io.architecture(WideResNet(16, 4, 10).state_dict()) == "WRN-16-4, 10 classes"
    assert model_io.architecture(WideResNet(10, 1, 100).state_dict()) == "WRN-10-1, 100 classes"
    module = {f"module.{k}": v for k, v in WideResNet(22, 2, 9).state_dict().items()}  # a DataParallel file
    assert model_io.architecture(module) == "WRN-22-2, 9 classes"
    with torch.device("meta"):
        resnet = NormalizedResNet50(9).state_dict()
    assert model_io.architecture(resnet) == "ResNet-50, 9 classes"
    assert model_io.architecture({"w": torch.zeros(3)}) == "an unknown network (1 tensors), unknown class count"
    if LAYOUT.is_file():  # the released WRN-34-10 checkpoints' names and shapes
        layout = json.loads(LAYOUT.read_text())["num_classes_10"]
        released = {name: torch.empty(shape, device="meta") for name, shape in layout}
        assert model_io.architecture(released) == "WRN-34-10, 10 classes"


@pytest.mark.parametrize(
    ("net", "found"),
    [((16, 4, 10), "WRN-16-4, 10 classes"), ((10, 1, 100), "WRN-10-1, 100 classes")],
    ids=["architecture", "classes"],
)
def test_external_file_is_checked_before_any_work(tmp_path, monkeypatch, net, found):
    path = checkpoint.save(tmp_path / "theirs.pt", {"state_dict": WideResNet(*net).state_dict()})
    cfg = _cfg(**{"evaluate.checkpoints.dualat": str(path)})
    monkeypatch.setattr(model_io, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(CheckpointError) as err:
        classification.accuracy(cfg, "dualat", model_io.selected_model(cfg, "dualat")[0], tmp_path / "out")
    assert _one_line(err) == f"{path} holds {found}; params.yaml (quick.cifar10) wants WRN-10-1, 10 classes"
    assert not (tmp_path / "out" / "accuracy.json").exists()
    with pytest.raises(CheckpointError, match="holds " + found):
        model_io.check_external(cfg, "dualat")


def test_missing_external_file_names_its_key(tmp_path):
    cfg = _cfg(**{"evaluate.checkpoints.ratio": str(tmp_path / "ratio.pt")})
    with pytest.raises(CheckpointError) as err:
        classification.accuracy(cfg, "ratio", model_io.selected_model(cfg, "ratio")[0], tmp_path / "out")
    assert _one_line(err) == f"{tmp_path / 'ratio.pt'} does not exist (evaluate.checkpoints.ratio)"


def test_unknown_method_names_the_parameter_and_its_values():
    with pytest.raises(ConfigError) as err:
        model_io.selected_model(_cfg(), "dualatt")
    assert _one_line(err) == "method must be one of standard_at, ratio, dualat, got 'dualatt'"


# --- scripts/nb.py: the project's errors in one line, others with their traceback -------------------


def _nb_module():
    spec = importlib.util.spec_from_file_location("nb", ROOT / "scripts" / "nb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nb_names_user_errors_that_exist():
    import dualat.artifacts
    import dualat.bookkeeping
    import dualat.data
    import dualat.data.download
    import dualat.runs

    modules = (dualat.artifacts, dualat.bookkeeping, dualat.data, dualat.data.download, dualat.runs, config)
    classes = {c.__name__: c for m in modules
               for c in vars(m).values() if isinstance(c, type) and issubclass(c, Exception)}  # fmt: skip
    classes |= {
        c.__name__: c for c in (CheckpointError, checkpoint.CheckpointMissing, dualat.data.validate.TooFewImages)
    }
    assert set(_nb_module().USER_ERRORS) <= set(classes)


@pytest.mark.parametrize(("ename", "one_line"), [("ConfigError", True), ("KeyError", False)])
def test_nb_prints_the_message_of_a_user_error_only(tmp_path, monkeypatch, ename, one_line):
    nb = _nb_module()

    def failing(*args, **kwargs):
        raise PapermillExecutionError(1, 2, "cfg = ...", ename, "method must be one of ...", ["tb 1", "tb 2"])

    monkeypatch.chdir(ROOT)  # nb.py reads notebooks/ from the repository root
    monkeypatch.setattr(nb.papermill, "execute_notebook", failing)
    monkeypatch.setattr(nb, "Path", lambda p: tmp_path / p)  # outputs into tmp_path
    if one_line:
        with pytest.raises(SystemExit) as err:
            nb.main(["10_eval_accuracy", "x"])
        assert err.value.code.endswith("10_eval_accuracy-x.ipynb: method must be one of ...")
    else:
        with pytest.raises(PapermillExecutionError):
            nb.main(["10_eval_accuracy", "x"])


@pytest.mark.parametrize("wrong", ["text", "architecture", "method"])
def test_a_wrong_file_or_method_gives_one_line_through_nb(tmp_path, wrong):
    """A real papermill run of the accuracy notebook on a copy of the repository's notebooks whose
    params.yaml names a wrong file as Dual-AT's checkpoint (as `dvc repro` runs it); or a
    misspelt `method` parameter."""
    for folder in ("notebooks", "scripts"):
        (tmp_path / folder).mkdir()
        for f in (ROOT / folder).iterdir():
            if f.is_file():
                (tmp_path / folder / f.name).write_bytes(f.read_bytes())
    params = yaml.safe_load(PARAMS.read_text())
    params["profile"] = "quick"
    params["quick"]["cifar10"]["evaluate"]["checkpoints"]["dualat"] = "theirs.pt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    method = "dualat"
    if wrong == "text":
        (tmp_path / "theirs.pt").write_text("not a model\n")
        said = "theirs.pt: not a PyTorch checkpoint"
    elif wrong == "architecture":
        torch.save({"state_dict": WideResNet(16, 4, 10).state_dict()}, tmp_path / "theirs.pt")
        said = "theirs.pt holds WRN-16-4, 10 classes; params.yaml (quick.cifar10) wants WRN-10-1, 10 classes"
    else:
        method, said = "dualatt", "method must be one of standard_at, ratio, dualat, got 'dualatt'"
    env = os.environ | {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(
        [sys.executable, "scripts/nb.py", "10_eval_accuracy", "cifar10-dualat", "dataset=cifar10", f"method={method}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    # the kernel's own start-up warning is not an error of the run
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and not ln.startswith("[IPKernelApp]")]
    assert r.returncode != 0
    assert lines == [f"reports/notebooks/10_eval_accuracy-cifar10-dualat.ipynb: {said}"]
