"""dvc.yaml against the code-hash rule (dualat.code_hashes): each stage depends on the code of its
kind, an edit changes only the hash files of the kinds that run it, and DVC's own graph of the
pipeline then reruns only the stages downstream of those files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import yaml

from dualat import code_hashes, runs
from dualat.records import NotComputed

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("do", stage).get("deps", [])]


def test_every_stage_depends_on_the_code_of_its_kind():
    notebook_stages = {name for name, s in STAGES.items() if "scripts/nb.py" in s.get("do", s)["cmd"]}
    assert notebook_stages == set(code_hashes.STAGE_KINDS)  # every notebook stage has a kind
    files = {kind: str(code_hashes.path(kind)) for kind in code_hashes.KINDS}
    for name, stage in STAGES.items():
        deps = _deps(stage)
        assert "dualat" not in deps and not [d for d in deps if d.startswith("dualat/")], name
        listed = {kind for kind, f in files.items() if f in deps}
        assert listed == ({code_hashes.STAGE_KINDS[name]} if name in code_hashes.STAGE_KINDS else set()), name
    writer = STAGES["code_hashes"]
    assert writer["always_changed"] is True
    assert [next(iter(o)) for o in writer["outs"]] == list(files.values())
    assert all(next(iter(o.values())) == {"cache": False} for o in writer["outs"])
    assert writer["cmd"] == f"python -m dualat.code_hashes {code_hashes.DIR}"


def test_kinds_are_the_hashes_that_decide_reuse(monkeypatch):
    from dualat import config
    from dualat.evaluation import runner

    found = code_hashes.hashes()
    assert code_hashes.KINDS["training"]() == runs.NOT_TRAINING_CODE
    assert runs.resume_key({}, ())["code"] == found["training"]["sha256"]  # training resumes on this hash
    monkeypatch.setattr(runner, "sha256_file", lambda path: "0" * 64)
    monkeypatch.setattr(runner, "fingerprint", lambda names, root: {"sha256": {}})
    cfg = config.load(ROOT / "params.yaml", dataset="cifar10", profile="quick")
    key = runner.record_key("accuracy", cfg, "dualat", "x.pt")
    assert key["code"] == found["evaluation"]["sha256"]  # evaluation records are reused on this one


def _edit(package: Path, module: str, old: str, new: str) -> None:
    path = package / module
    text = path.read_text()
    assert old in text, f"{module} no longer holds {old!r}: pick another edit"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """A copy of the package that runs.code_hash reads instead of the real one."""
    copy = tmp_path / "dualat"
    shutil.copytree(runs.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "PACKAGE", copy)
    return copy


def _changed(before: dict, after: dict) -> set[str]:
    return {kind for kind in before if before[kind]["sha256"] != after[kind]["sha256"]}


def test_an_edit_changes_the_hashes_of_the_kinds_that_run_it(package, tmp_path):
    first = code_hashes.write(tmp_path / "code")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "code").iterdir()}
    _edit(package, "train.py", '"""', '"""A docstring rewritten. ')  # the module docstring
    _edit(package, "train.py", "\n\n", "\n\n# a comment\n")
    assert _changed(first, code_hashes.write(tmp_path / "code")) == set()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "code").iterdir()} == stamps  # not rewritten
    steps = [
        ("reports/tables.py", {"report"}),
        ("evaluation/classification.py", {"evaluation", "report"}),
        ("train.py", {"training", "report"}),  # evaluation does not import the training loop
        ("sampling.py", {"training", "evaluation", "report"}),
    ]
    for module, kinds in steps:
        before = code_hashes.hashes()
        (package / module).write_text((package / module).read_text() + "\n_EDITED = 1\n")
        assert _changed(before, code_hashes.write(tmp_path / "code")) == kinds, module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside dvc 3.67
def test_dvc_reruns_only_what_depends_on_a_changed_kind(tmp_path):
    """DVC's own graph of dvc.yaml (foreach/matrix resolved by DVC): the stages downstream of
    each hash file."""
    from dvc.repo import Repo

    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    graph = Repo.init(str(tmp_path), no_scm=True).index.graph  # edges run from a stage to one it depends on

    def downstream(kind: str) -> set[str]:
        direct = {s for s in graph if str(code_hashes.path(kind)) in [d.def_path for d in s.deps]}
        return {s.name.split("@")[0] for s in direct.union(*(nx.ancestors(graph, s) for s in direct))}

    assert downstream("report") == {"report"}
    assert downstream("evaluation") == {
        "eval_accuracy",
        "eval_generation",
        "eval_counterfactuals",
        "eval_ood",
        "report",
    }
    assert downstream("training") == set(code_hashes.STAGE_KINDS)


def test_code_hashes_command_writes_the_three_files(tmp_path):
    out = tmp_path / "code"
    r = subprocess.run([sys.executable, "-m", "dualat.code_hashes", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.json", "report.json", "training.json"]
    r = subprocess.run([sys.executable, "-m", "dualat.code_hashes"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "usage: python -m dualat.code_hashes OUT_DIR" in r.stderr


# --- DVC's conventions: metrics, plots, artifacts --------------------------------------------------

EVALUATIONS = {"eval_accuracy": "accuracy", "eval_generation": "generation", "eval_counterfactuals": "counterfactuals"}
EVALUATIONS["eval_ood"] = "ood"


def test_each_evaluation_declares_its_flat_metrics_file():
    from dualat.evaluation import runner

    for stage, group in EVALUATIONS.items():
        folder = f"results/${{item.dataset}}/${{item.method}}/{group}"  # the notebook's out_dir
        assert folder in [next(iter(o)) for o in STAGES[stage]["outs"]], stage
        assert STAGES[stage]["metrics"] == [{str(runner.metrics_path(folder)): {"cache": False}}], stage


def test_flat_metrics_keep_the_numbers_and_leave_out_what_was_not_computed():
    from dualat.evaluation.runner import flat_metrics

    reason = NotComputed("autoattack: not run")
    accuracy = {"clean_acc": 0.75, "pgd_acc": 0.5, "autoattack": {"robust_acc": reason}, "ece": 0.03, "n_test": 32}
    accuracy["reliability"] = {"bin_acc": [0.1, 0.2]}
    assert flat_metrics("accuracy", accuracy) == {"clean_acc": 0.75, "pgd_acc": 0.5, "ece": 0.03, "n_test": 32}
    generation = {"fid_conditional": 40.0, "fid_conditional_std": None, "kid_conditional": {"mean": 0.01, "std": 0.002}}
    generation |= {"kid_unconditional": reason, "inception_score": reason, "n_samples": 100}
    assert flat_metrics("generation", generation) == {
        "fid_conditional": 40.0, "kid_conditional": 0.01, "kid_conditional_std": 0.002, "n_samples": 100,
    }  # fmt: skip
    cf = {"eps": [2.0, 0.5], "fid": [10.0, 20.0], "confidence": [0.9, 0.6], "per_class_fid": [[1.0], [2.0]], "n": 8}
    assert flat_metrics("counterfactuals", cf) == {
        "fid_eps2": 10.0, "confidence_eps2": 0.9, "fid_eps0.5": 20.0, "confidence_eps0.5": 0.6, "n": 8,
    }  # fmt: skip
    ood = {"sets": {"svhn": {"n": 64, "max_prob": {"clean": 0.9, "adversarial": 0.4}}, "noise": reason}, "n_id": 32}
    assert flat_metrics("ood", ood) == {
        "auroc_svhn_max_prob_clean": 0.9,
        "auroc_svhn_max_prob_adversarial": 0.4,
        "n_id": 32,
    }
    assert flat_metrics("ood", {"sets": {"svhn": reason}, "n_id": reason}) == {"not_computed": "autoattack: not run"}
    # the first sentence: the folders this machine tried stay in the record, out of git's metrics files
    missing = NotComputed("RestrictedImageNet (ImageNet): data not found. Tried: - /home/me/data/imagenet/train")
    assert flat_metrics("accuracy", {"clean_acc": missing}) == {
        "not_computed": "RestrictedImageNet (ImageNet): data not found"
    }


def test_an_evaluation_writes_its_flat_metrics_also_when_it_reuses_its_record(tmp_path, monkeypatch):
    """DVC removes the metrics file before it reruns a stage; a reused record writes it again."""
    from dualat import artifacts, config, model_io
    from dualat.evaluation import runner

    folder = tmp_path / "model"
    artifacts.write_status(folder, None)
    (folder / "final.pt").write_bytes(b"weights")
    monkeypatch.setattr(model_io, "load_model", lambda cfg, path, source=None: "a model")
    monkeypatch.setattr(runner, "check_finite_outputs", lambda *a: None)
    monkeypatch.setattr(runner, "_data_provenance", lambda cfg: {})
    calls = []

    def compute(model, seconds):
        calls.append(model)
        return {"clean_acc": 0.5, "pgd_acc": 0.25, "autoattack": {"robust_acc": 0.2}, "ece": 0.1, "n_test": 4}

    cfg = config.load(ROOT / "params.yaml", dataset="cifar10", profile="quick")
    out = tmp_path / "results" / "accuracy"
    expected = {"clean_acc": 0.5, "pgd_acc": 0.25, "ece": 0.1, "n_test": 4, "autoattack_acc": 0.2}
    for _ in range(2):
        runner.run("accuracy", cfg, "dualat", folder / "final.pt", out, compute, reuse={})
        assert json.loads((tmp_path / "results" / "accuracy.metrics.json").read_text()) == expected
        (tmp_path / "results" / "accuracy.metrics.json").unlink()
    assert len(calls) == 1  # the second run reused the record


def test_plots_read_the_training_curves_and_artifacts_name_the_selected_models():
    from dualat import bookkeeping, config, model_io

    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    files = {f for plot in dvc_yaml["plots"] for spec in plot.values() for f in spec["y"]}
    kinds = config.load(ROOT / "params.yaml", dataset="cifar10", profile="paper").stage2.ablation_kinds
    expected = {f"models/{d}/{m}/{bookkeeping.CURVES}" for d in config.DATASETS for m in config.METHODS}
    assert files == expected | {f"models/cifar10/ablation/{k}/{bookkeeping.CURVES}" for k in kinds}
    for plot in dvc_yaml["plots"]:
        spec = next(iter(plot.values()))
        assert spec["x"] == "step" and len(set(spec["y"].values())) == 1
    artifacts = dvc_yaml["artifacts"]
    for profile in ("paper", "quick"):
        for d in config.DATASETS:
            cfg = config.load(ROOT / "params.yaml", dataset=d, profile=profile)
            for m in config.METHODS:
                entry = artifacts[f"{d}-{m}"]
                assert entry["path"] == model_io.trained_model(cfg, m)[0].as_posix(), (profile, d, m)
                assert entry["type"] == "model" and entry["labels"] == [d, m, "${profile}"]


def test_curves_are_the_evaluations_as_rows_of_numbers():
    from dualat.bookkeeping import curves

    history = [
        {"step": 4, "T": 5, "auc": 0.5, "clean_acc": 0.6, "robust_acc": 0.3, "fid": 90.0},
        {"step": 4, "resumed_after_nonfinite": ["stage2.optim.lr: 0.1 -> 0.05"]},
        {"step": 8, "T": 6, "auc": 0.75, "clean_acc": 0.6, "robust_acc": 0.35, "fid": None, "flag": True},
    ]
    assert curves(history) == [
        {"step": 4, "T": 5, "auc": 0.5, "clean_acc": 0.6, "robust_acc": 0.3, "fid": 90.0},
        {"step": 8, "T": 6, "auc": 0.75, "clean_acc": 0.6, "robust_acc": 0.35},
    ]


# --- where the time goes: scripts/stage_times.py ---------------------------------------------------


def test_stage_times_splits_a_run_from_papermills_metadata(tmp_path):
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import stage_times
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": "2026-01-01T00:00:00", "duration": 10.0, "exception": None}
    nb.metadata["nb_py"] = {"seconds": {"startup": 0.5, "papermill": 10.0, "html": 1.0}}
    for tags, start, seconds, source in (
        (["parameters"], "2026-01-01T00:00:02", 0.25, "dataset = 'cifar10'"),
        ([], "2026-01-01T00:00:02.250000", 6.0, "import os\nmetrics = accuracy(cfg)"),
        ([], "2026-01-01T00:00:08.250000", 0.75, "views.accuracy(out_dir);"),
    ):
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": tags})
        cell.metadata["papermill"] = {"start_time": start, "duration": seconds}
        nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "10_eval_accuracy-cifar100-dualat.ipynb")
    t = stage_times.times(tmp_path / "10_eval_accuracy-cifar100-dualat.ipynb")
    assert (t["run"], t["imports"], t["kernel"], t["cells"], t["first"], t["html"]) == (11.5, 0.5, 2.0, 7.0, 6.0, 1.0)
    assert t["close"] == pytest.approx(1.0) and t["slowest_cell"] == "metrics = accuracy(cfg)"
    lines = stage_times.table(tmp_path).splitlines()
    assert lines[-1].split() == ["all", "(x1)", "11.5", "0.5", "2.0", "7.0", "6.0", "1.0", "1.0"]
    assert "no executed notebooks" in stage_times.table(tmp_path / "none")
