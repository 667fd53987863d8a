"""Faults a user meets: kills, changed settings, NaN stops, bad params, foreign checkpoints.

Each test names the point of the "trustworthy runs" issue it covers (docs/resume.md, docs/data.md).
Tiny WRN-10-1 runs on random tensors; a few seconds each.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
import yaml
from test_train import STAGE1, _model, _same_weights, _streams, _test_xy

from dualat import artifacts, checkpoint, config, fid_reference, model_io, runs
from dualat.config import ConfigError
from dualat.evaluation import classification, counterfactuals, generation, ood_detection, runner
from dualat.metrics import cached_stats
from dualat.records import atomic_open, write_record
from dualat.train import NONFINITE, NonFiniteLoss, train_stage1

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def _stage1(out, cfg=STAGE1, key=None, **kw):
    model = _model()
    s, _, _ = _streams()
    result = train_stage1(model, cfg, s, 4, _test_xy(), out, key=key, progress=False, **kw)
    return model, result


def _key(cfg=STAGE1, **extra):
    return runs.resume_key({"stage1": dataclasses.asdict(cfg)}, ("stage1",), **extra)


# --- 1, 2: superseded runs are kept whole; resume compares only the trajectory ------------------


def test_superseded_runs_are_kept_whole_with_the_differences(tmp_path):
    out = tmp_path / "standard_at"
    _stage1(out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"best.pt", "final.pt", "history.json", "last.pt"} <= set(first)
    lr2 = dataclasses.replace(STAGE1, optim=dataclasses.replace(STAGE1.optim, lr=0.02))
    with pytest.warns(UserWarning, match=r"stage1\.optim\.lr: 0\.05 -> 0\.02"):
        _stage1(out, lr2)
    lr3 = dataclasses.replace(STAGE1, optim=dataclasses.replace(STAGE1.optim, lr=0.01))
    with pytest.warns(UserWarning, match=r"0\.02 -> 0\.01"):
        _stage1(out, lr3)
    kept = sorted((tmp_path / "standard_at.superseded").iterdir())
    assert len(kept) == 2  # both earlier runs, neither overwritten
    assert {p.name: p.read_bytes() for p in kept[0].iterdir() if p.name != "why.txt"} == first
    assert "stage1.optim.lr: 0.05 -> 0.02" in (kept[0] / "why.txt").read_text()


def test_unrelated_key_resumes_and_trajectory_key_does_not(tmp_path):
    cfg = config.load(PARAMS, dataset="cifar10", profile="quick")
    full = config.to_dict(cfg)
    other_eval = config.to_dict(dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, batch_size=7)))
    keys = runs.RESUME_KEYS["standard_at"]
    assert runs.resume_key(full, keys) == runs.resume_key(other_eval, keys)
    other_workers = config.to_dict(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=3)))
    assert runs.resume_key(full, keys) == runs.resume_key(other_workers, keys)
    other_lr = dataclasses.replace(cfg.stage1, optim=dataclasses.replace(cfg.stage1.optim, lr=0.2))
    assert runs.resume_key(full, keys) != runs.resume_key(
        config.to_dict(dataclasses.replace(cfg, stage1=other_lr)), keys
    )

    # a run killed at step 3 of 8 continues under the same key: equal to an uninterrupted run
    full_model, _ = _stage1(tmp_path / "full", key=_key())
    _stage1(tmp_path / "part", key=_key(), checkpoint_every=1, stop_after=3)
    resumed, result = _stage1(tmp_path / "part", key=_key())
    assert result["steps"] == 8 and _same_weights(full_model, resumed)
    assert not (tmp_path / "part.superseded").exists()


def test_code_hash_ignores_comments_but_not_code(tmp_path, monkeypatch):
    pkg = tmp_path / "dualat"
    pkg.mkdir()
    (pkg / "train.py").write_text('"""doc"""\n\ndef step(x):\n    return x + 1\n')
    (pkg / "reports.py").write_text("def table():\n    return 1\n")
    monkeypatch.setattr(runs, "PACKAGE", pkg)
    h0 = runs.code_hash()
    (pkg / "train.py").write_text('"""other doc"""\n# a comment\ndef step(x):  # why\n    return x + 1\n')
    (pkg / "reports.py").write_text("def table():\n    return 2\n")  # presentation only
    assert runs.code_hash() == h0
    (pkg / "train.py").write_text("def step(x):\n    return x + 2\n")
    assert runs.code_hash() != h0


def test_a_log_string_in_data_download_retrains_nothing(tmp_path, monkeypatch):
    """The training hash covers what can change a trajectory: a message edited in data/download.py
    or config.py keeps it, a change in the augmentation module does not."""
    import shutil

    package = tmp_path / "dualat"
    shutil.copytree(Path(runs.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "PACKAGE", package)
    hashed = {str(p) for p in runs.hashed_modules()}
    assert {"train.py", "bookkeeping.py", "losses.py", "data/streams.py", "data/augment.py"} <= hashed
    assert not hashed & {"data/download.py", "data/fingerprint.py", "progress.py", "config.py"}
    h0 = runs.code_hash()

    def edit(name, old, new):
        text = (package / name).read_text()
        assert old in text, name
        (package / name).write_text(text.replace(old, new, 1))

    edit("data/download.py", "has no download; downloadable:", "cannot be downloaded; these can:")
    edit("config.py", "remove the quotes", "drop the quotes")
    assert runs.code_hash() == h0
    (package / "data" / "augment.py").write_text((package / "data" / "augment.py").read_text() + "\nSHIFT = 1\n")
    assert runs.code_hash() != h0


def test_evaluation_code_is_outside_the_training_hash_only():
    """The code hashes exclude modules by their path in the package: each excluded entry names a
    module or folder that exists (a typo would silently keep it in the hash), every file of
    dualat/evaluation/ is out of the training hash and in the evaluation hash."""
    package = Path(runs.__file__).parent
    for entry in (*runs.NOT_TRAINING_CODE, *runs.NOT_EVALUATION_CODE):
        assert (package / f"{entry}.py").is_file() or (package / entry).is_dir(), entry
    evaluation = sorted((package / "evaluation").rglob("*.py"))
    assert len(evaluation) > 1
    for path in evaluation:
        relative = PurePosixPath(path.relative_to(package).as_posix())
        assert runs.excluded(relative, runs.NOT_TRAINING_CODE), relative
        assert not runs.excluded(relative, runs.NOT_EVALUATION_CODE), relative


def test_finished_run_is_not_rewritten_and_new_code_retrains(tmp_path):
    out = tmp_path / "run"
    _, first = _stage1(out, key=_key())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.01)
    _, result = _stage1(out, key=_key())  # DVC reran the stage for a change that cannot affect it
    assert result["steps"] == 8
    assert result["seconds"] == checkpoint.load(out / "last.pt")["seconds"]
    assert result == first  # the first rerun too: status.json stays byte-identical
    statuses = [artifacts.write_status(tmp_path / f"s{i}", None, **r) for i, r in enumerate((first, result))]
    assert statuses[0] == statuses[1]
    assert (tmp_path / "s0" / "status.json").read_bytes() == (tmp_path / "s1" / "status.json").read_bytes()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
    new_code = _key() | {"code": "a different training step"}
    with pytest.warns(UserWarning, match="code"):
        _, result = _stage1(out, key=new_code)  # a code fix: the old weights are not re-emitted
    assert result["steps"] == 8 and len(result["history"]) == 2  # trained again from step 0
    assert checkpoint.load(out / "last.pt")["key"] == new_code


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _lr(value):
    return dataclasses.replace(STAGE1, optim=dataclasses.replace(STAGE1.optim, lr=value))


def test_finished_run_without_last_pt_is_superseded_not_overwritten(tmp_path):
    """A finished run whose last.pt was deleted (to save disk) still records its key in final.pt
    and best.pt: a rerun with another lr sets it aside whole; with the same key it is used as it is."""
    out = tmp_path / "run"
    _, first = _stage1(out, key=_key())
    (out / "last.pt").unlink()
    kept = _files(out)
    _, again = _stage1(out, key=_key())  # the same settings: finished, nothing trained or written
    assert again == first and _files(out) == kept
    with pytest.warns(UserWarning, match=r"stage1\.optim\.lr: 0\.05 -> 0\.02"):
        _, other = _stage1(out, _lr(0.02), key=_key(_lr(0.02)))
    (aside,) = (tmp_path / "run.superseded").iterdir()
    assert {k: v for k, v in _files(aside).items() if k != "why.txt"} == kept  # best.pt, final.pt, history.json
    assert other["history"] != first["history"] and checkpoint.load(out / "final.pt")["key"] == _key(_lr(0.02))


def test_truncated_last_pt_of_a_finished_run_is_not_retrained(tmp_path):
    out = tmp_path / "run"
    _, first = _stage1(out, key=_key())
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    kept = _files(out)
    with pytest.warns(UserWarning, match=r"last\.pt cannot be read .*final\.pt and selected checkpoints are complete"):
        _, result = _stage1(out, key=_key())
    assert result == first and _files(out) == kept
    assert not (tmp_path / "run.superseded").exists()
    (out / "best.pt").write_bytes(b"torn")  # a selected checkpoint torn too: not complete, so set aside
    with pytest.warns(UserWarning, match="cannot be read"):
        _, result = _stage1(out, key=_key())
    (aside,) = (tmp_path / "run.superseded").iterdir()
    assert _files(aside)["best.pt"] == b"torn" and result["history"] == first["history"]  # trained again


def test_a_b_a_brings_the_first_run_back(tmp_path):
    out = tmp_path / "run"
    _, a = _stage1(out, key=_key())
    files_a = _files(out)
    with pytest.warns(UserWarning, match="other settings"):
        _stage1(out, _lr(0.02), key=_key(_lr(0.02)))
    files_b = _files(out)
    with pytest.warns(UserWarning) as caught:
        _, again = _stage1(out, key=_key())
    assert any("brought back" in str(w.message) for w in caught)
    assert again == a and _files(out) == files_a  # A as it was, not retrained
    (aside,) = (tmp_path / "run.superseded").iterdir()  # B, set aside; A's old place is gone
    assert {k: v for k, v in _files(aside).items() if k != "why.txt"} == files_b


def test_a_b_a_continues_an_unfinished_first_run(tmp_path):
    full, _ = _stage1(tmp_path / "full", key=_key())
    out = tmp_path / "run"
    _stage1(out, key=_key(), checkpoint_every=1, stop_after=3)
    with pytest.warns(UserWarning, match="other settings"):
        _stage1(out, _lr(0.02), key=_key(_lr(0.02)))
    with pytest.warns(UserWarning, match="brought back"):
        resumed, result = _stage1(out, key=_key())
    assert result["steps"] == 8 and _same_weights(full, resumed)  # continued from step 3


_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from dualat import runs
    with runs.locked({out!r}):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_training_of_one_folder_is_refused(tmp_path):
    from dualat import stages

    out = tmp_path / "models" / "standard_at"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK.format(out=str(out))], stdout=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunLocked, match=rf"{out}.*another process \(pid {holder.pid}"):
            stages.train(_quick_cfg(), "standard_at", out)
        assert not out.exists()  # nothing set aside, nothing written
    finally:
        holder.kill()  # a dead holder: the OS drops its lock
        holder.wait()
    child = [sys.executable, "-c", f"from dualat import runs\nwith runs.locked({str(out)!r}): print('shared')"]
    with runs.locked(out), runs.locked(out):  # nested blocks of one process share it, and its children
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        assert subprocess.run(child, capture_output=True, text=True, env=env).stdout == "shared\n"
    assert runs.LOCK_ENV not in os.environ
    assert runs.lock_path(out.resolve()).read_text() == ""


def test_dvc_params_agree_with_resume_keys():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, method in (("standard_at", "standard_at"), ("ratio", "ratio"), ("dualat", "dualat")):
        params = {p.replace("${profile}.${item}.", "") for p in stages[stage]["do"]["params"]}
        assert set(runs.RESUME_KEYS[method]) <= params, stage
        assert params - set(runs.RESUME_KEYS[method]) <= {"profile", "data_root", *runs.LAUNCH_KEYS}, stage
        assert "data/prepared/code/training.json" in stages[stage]["do"]["deps"]  # its code (dualat.code_hashes)
    ablation = {p.replace("${profile}.cifar10.", "") for p in stages["ablation"]["params"]}
    allowed = set(runs.RESUME_KEYS["ablation"]) | {"profile", "data_root", *runs.LAUNCH_KEYS}
    assert set(runs.RESUME_KEYS["ablation"]) <= ablation <= allowed
    for name, stage in stages.items():
        deps = stage.get("do", stage).get("deps", [])
        assert not [d for d in deps if d.startswith("dualat/")], f"{name} lists package files one by one"


# --- 3: a fixed data folder reruns what depended on it --------------------------------------------


def test_data_fingerprint_follows_the_files(tmp_path):
    from dualat.data import fingerprint

    out = tmp_path / "sources.json"
    missing = fingerprint.write(out, ["cifar10", "tinyimagenet32"], tmp_path / "data")
    assert missing["files"]["cifar10"] == []
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "cifar10_train_00.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2))
    found = fingerprint.write(out, ["cifar10", "tinyimagenet32"], tmp_path / "data")
    assert found["sha256"]["cifar10"] != missing["sha256"]["cifar10"]
    assert found["sha256"]["tinyimagenet32"] == missing["sha256"]["tinyimagenet32"]
    mtime = out.stat().st_mtime_ns
    time.sleep(0.01)
    fingerprint.write(out, ["cifar10", "tinyimagenet32"], tmp_path / "data")
    assert out.stat().st_mtime_ns == mtime  # unchanged files: DVC sees the same output
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["data_sources"]["do"]["always_changed"] is True and stages["preflight"]["always_changed"] is True
    assert "data/prepared/${item}/sources.json" in stages["prepare"]["do"]["deps"]
    assert "data/prepared/${item}/preflight.json" in stages["data_sources"]["do"]["deps"]  # runs after it


# --- 4: the NaN/inf advice works as said; lr must be finite --------------------------------------


def test_nonfinite_stop_then_lower_lr_resumes(tmp_path, monkeypatch):
    from dualat import train

    calls = []

    def diverging_at_ce(logits, y):  # the loss turns NaN from the 6th step on (a too-high lr)
        loss, stats = original(logits, y)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 5 else loss), stats

    original = train.at_ce
    monkeypatch.setattr(train, "at_ce", diverging_at_ce)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="optim.lr"):
        _stage1(out, key=_key(), checkpoint_every=1)
    stopped_at = checkpoint.load(out / "last.pt")["step"]
    assert stopped_at == 5 and (out / NONFINITE).is_file()

    monkeypatch.setattr(train, "at_ce", original)
    low = dataclasses.replace(STAGE1, optim=dataclasses.replace(STAGE1.optim, lr=0.01))
    with pytest.warns(UserWarning, match=r"after a NaN/inf stop with: stage1\.optim\.lr: 0\.05 -> 0\.01"):
        model, result = _stage1(out, low, key=_key(low))
    assert result["steps"] == 8 and not (out / NONFINITE).exists()
    assert not (tmp_path / "run.superseded").exists()  # resumed, not started over
    resumed = [h for h in result["history"] if "resumed_after_nonfinite" in h]
    assert resumed and resumed[0]["step"] == stopped_at
    state = checkpoint.load(out / "last.pt")
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.01  # the new lr took effect
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # any other change after a NaN stop is a new run
    (out / NONFINITE).write_text("{}")
    with pytest.warns(UserWarning, match="epochs"):
        _stage1(out, dataclasses.replace(low, epochs=1), key=_key(dataclasses.replace(low, epochs=1)))
    assert (tmp_path / "run.superseded").is_dir()


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_lr_must_be_finite(tmp_path, value):
    text = PARAMS.read_text().replace("lr: 0.1\n", f"lr: {value}\n", 1)
    assert text != PARAMS.read_text()
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"stage1\.optim\.lr must be a finite number"):
        config.load(tmp_path / "params.yaml", dataset="cifar10", profile="paper")


# --- 5: FID reference statistics are keyed by what they were computed from -----------------------


def test_fid_reference_is_keyed(tmp_path):
    calls = []

    def compute(n):
        def f():
            calls.append(n)
            return np.random.default_rng(n).normal(size=(n, 4))

        return f

    path = tmp_path / "stats.npz"
    quick = {"profile": "quick", "n": 50}
    mu_q, _ = cached_stats(path, compute(50), quick)
    mu_again, _ = cached_stats(path, compute(50), quick)
    assert calls == [50] and np.array_equal(mu_q, mu_again)
    with pytest.warns(UserWarning, match="other images"):
        mu_p, _ = cached_stats(path, compute(80), {"profile": "paper", "n": 0})
    assert calls == [50, 80] and not np.array_equal(mu_q, mu_p)


def test_fid_ref_key_names_its_sources():
    cfg = config.load(PARAMS, dataset="cifar10", profile="quick")
    key = fid_reference.fid_ref_key(cfg)
    assert {"profile", "dataset", "split", "n", "data", "mode", "weights"} <= set(key)
    paper = config.load(PARAMS, dataset="cifar10", profile="paper")
    assert fid_reference.fid_ref_key(paper) != key


# --- 6: no orphan temp files; seconds add up over resumes; strict JSON ---------------------------


def test_orphan_temp_file_is_removed_by_the_next_save(tmp_path):
    orphan = tmp_path / ".last.pt.abc123.tmp"  # what a kill during torch.save leaves
    orphan.write_bytes(b"x" * 100)
    unrelated = tmp_path / ".best.pt.abc123.tmp"
    unrelated.write_bytes(b"y")
    checkpoint.save(tmp_path / "last.pt", {"step": 1})
    assert not orphan.exists() and unrelated.exists()  # another file's writer may be alive


def test_seconds_accumulate_over_resumes(tmp_path):
    out = tmp_path / "run"
    _stage1(out, key=_key(), checkpoint_every=1, stop_after=4)
    first = checkpoint.load(out / "last.pt")["seconds"]
    _, result = _stage1(out, key=_key())
    assert first > 0 and result["seconds"] > first


def test_records_are_strict_json(tmp_path):
    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    write_record(tmp_path / "r.json", {"fid": float("inf"), "x": [float("nan"), 1.0]}, config={}, checkpoint=None)
    assert strict((tmp_path / "r.json").read_text())["metrics"] == {"fid": None, "x": [None, 1.0]}
    artifacts.write_status(tmp_path / "s", None, best={"fid": float("inf")})
    assert strict((tmp_path / "s" / "status.json").read_text())["best"]["fid"] is None


# --- 7: which weights are loaded, and which file is evaluated -------------------------------------


def _quick_cfg(**overrides):
    return config.load(PARAMS, dataset="cifar10", profile="quick", overrides=overrides)


def test_load_model_honours_ema_in_last_pt(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "new_model", lambda cfg: _model())
    _stage1(tmp_path / "ema")
    state = checkpoint.load(tmp_path / "ema" / "last.pt")
    ema = model_io.load_model(_quick_cfg(), tmp_path / "ema" / "last.pt")
    assert all(torch.equal(v, state["ema"]["module"][k]) for k, v in ema.state_dict().items())
    final = checkpoint.load(tmp_path / "ema" / "final.pt")["model"]
    assert all(torch.equal(v, final[k]) for k, v in ema.state_dict().items())  # as final.pt: EMA
    plain = model_io.load_model(_quick_cfg(), tmp_path / "ema" / "last.pt", "plain")
    assert all(torch.equal(v, state["model"][k]) for k, v in plain.state_dict().items())
    no_ema = dataclasses.replace(STAGE1, ema=dataclasses.replace(STAGE1.ema, enabled=False))
    _stage1(tmp_path / "plain", no_ema)
    with pytest.raises(ValueError, match="holds no EMA weights"):
        model_io.load_model(_quick_cfg(), tmp_path / "plain" / "last.pt", "ema")


def test_selected_model_without_training_fid_is_final_pt():
    path, why = model_io.selected_model(_quick_cfg(**{"stage2.eval_fid_samples": 0}), "dualat")
    assert path.name == "final.pt" and "eval_fid_samples is 0" in why
    path, why = model_io.selected_model(_quick_cfg(), "dualat")
    assert path.name == "best_fid.pt" and "best FID" in why


# --- 9: a model with non-finite logits is refused before any evaluation work ---------------------


@pytest.mark.parametrize("group", ["accuracy", "generation", "counterfactuals", "ood"])
def test_nan_model_is_refused_by_every_evaluation(tmp_path, monkeypatch, group):
    monkeypatch.setattr(model_io, "new_model", lambda cfg: _model())
    model = _model()
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    path = checkpoint.save(tmp_path / "model" / "final.pt", {"model": model.state_dict()})
    artifacts.write_status(tmp_path / "model", None)
    cfg = _quick_cfg()
    calls = {
        "accuracy": lambda: classification.accuracy(cfg, "dualat", path, tmp_path / "out", progress=False),
        "generation": lambda: generation.generation(cfg, "dualat", path, tmp_path / "ref.npz", tmp_path / "out"),
        "counterfactuals": lambda: counterfactuals.counterfactuals(cfg, "dualat", path, tmp_path / "out"),
        "ood": lambda: ood_detection.ood(cfg, "dualat", path, tmp_path / "out", progress=False),
    }
    t0 = time.time()
    with pytest.raises(ValueError, match=r"model output is NaN/inf for .*final\.pt"):
        calls[group]()
    assert time.time() - t0 < 10  # before any data, attack or Inception work
    assert not (tmp_path / "out" / f"{group}.json").exists()


def test_evaluation_record_of_the_same_key_is_reused(tmp_path, monkeypatch):
    from tests.conftest import shared_data_root

    if shared_data_root() is None:
        pytest.skip("offline CIFAR-10 shards not found")
    monkeypatch.setattr(model_io, "new_model", lambda cfg: _model())
    path = checkpoint.save(tmp_path / "model" / "final.pt", {"model": _model().state_dict()})
    artifacts.write_status(tmp_path / "model", None)
    cfg = dataclasses.replace(
        _quick_cfg(**{"data.n_test": 16, "evaluate.ood_sets": ["noise"], "evaluate.ood_n": 8}),
        data_root=str(shared_data_root()),
    )
    computed = []
    monkeypatch.setattr(runner, "check_finite_outputs", lambda *a: computed.append(1))
    first = ood_detection.ood(cfg, "dualat", path, tmp_path / "out", progress=False)
    again = ood_detection.ood(cfg, "dualat", path, tmp_path / "out", progress=False)
    assert computed == [1] and again == first  # the same model, settings, data and code
    checkpoint.save(path, {"model": _model().state_dict(), "other": 1})  # other checkpoint bytes
    ood_detection.ood(cfg, "dualat", path, tmp_path / "out", progress=False)
    assert computed == [1, 1]


# --- 10: every value checked when params load ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("steps_grid:\n      - 5\n      - 20\n", "steps_grid:\n      - -5\n      - 0\n", r"sample\.steps_grid must hold only values > 0"),
        ("ood_sets:\n      - cifar100\n      - svhn\n      - tinyimagenet32\n      - noise\n", "ood_sets:\n      - cifar100\n      - svhm\n", r"evaluate\.ood_sets"),
        ("depth: 10", "depth: 12", r"quick\.cifar10\.model\.depth must be 6n\+4"),
        ("lr: 0.01              # quick", "lr: 1e-3  # quick", r"stage2\.optim\.lr is the string '1e-3'.*write 1\.0e-3"),
        ("num_classes: 10\n      image_size: 32\n      ood: tinyimagenet32", "num_classes: 100\n      image_size: 32\n      ood: tinyimagenet32", r"data\.num_classes is 100 but cifar10 has 10"),
        ("ood: tinyimagenet32     # offline stand-in for 80M Tiny Images (shared/datasets)\n      n_train: 2000\n      n_test: 500\n      n_ood: 5000", "ood: noise\n      n_train: 2000\n      n_test: 500\n      n_ood: 0", r"data\.n_ood must be > 0 when data\.ood is noise"),
    ],
    ids=["steps_grid", "ood_sets", "depth", "lr_string", "num_classes", "noise_n_ood"],
)  # fmt: skip
def test_params_are_checked_at_load(tmp_path, old, new, message):
    text = PARAMS.read_text()
    assert old in text
    (tmp_path / "params.yaml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path / "params.yaml", dataset="cifar10", profile="quick")


def test_unknown_profile_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS.read_text().replace("profile: quick", "profile: quik", 1))
    with pytest.raises(ConfigError, match="profile must be one of"):
        config.load(tmp_path / "params.yaml", dataset="cifar10")


def test_unknown_profile_stops_the_first_dvc_stage(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS.read_text().replace("profile: quick", "profile: quik", 1))
    r = subprocess.run(
        [sys.executable, "-m", "dualat.preflight"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode != 0 and "params.yaml: profile must be one of" in r.stderr and "quik" in r.stderr
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages)[0] == "preflight" and stages["preflight"]["cmd"] == "python -m dualat.preflight"


# --- 11, 12: scripts fail loudly -------------------------------------------------------------------


def test_notebook_runner_rejects_unknown_parameters():
    r = subprocess.run(
        [sys.executable, "scripts/nb.py", "00_prepare_data", "x", "datset=cifar100"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0
    assert "no parameter 'datset'" in r.stderr and "dataset" in r.stderr
    assert not (ROOT / "reports" / "notebooks" / "00_prepare_data-x.ipynb").exists()


# --- 13: foreign checkpoints -----------------------------------------------------------------------


def test_checkpoint_of_another_architecture_is_named(tmp_path, monkeypatch):
    from dualat.models import WideResNet

    other = WideResNet(10, 1, 100)  # a CIFAR-100 model
    cfg100 = config.load(PARAMS, dataset="cifar100", profile="quick")
    path = checkpoint.save(tmp_path / "c100.pt", {"model": other.state_dict(), "config": config.to_dict(cfg100)})
    with pytest.raises(ValueError) as err:
        model_io.load_model(_quick_cfg(), path)
    text = str(err.value)
    assert "\n" not in text and "c100.pt" in text
    assert text.endswith("c100.pt holds WRN-10-1, 100 classes; params.yaml (quick.cifar10) wants WRN-10-1, 10 classes")


def test_state_dict_wrapper_is_unwrapped(tmp_path):
    model = _model()
    path = tmp_path / "released.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    loaded = model_io.load_model(_quick_cfg(), path)
    assert _same_weights(model, loaded)


# --- kill -9 in the middle of training ---------------------------------------------------------------

_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_train import STAGE1, _model, _streams, _test_xy
    from dualat import train
    original = train.Run.save
    def slow_save(self, name="last.pt"):  # time for the parent to kill us between saves
        path = original(self, name)
        time.sleep(0.3)
        return path
    train.Run.save = slow_save
    s, _, _ = _streams()
    train.train_stage1(_model(), STAGE1, s, 4, _test_xy(), {out!r}, checkpoint_every=1, progress=False)
    """
)


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    full, _ = _stage1(tmp_path / "full")
    out = tmp_path / "killed"
    code = _KILLED_RUN.format(tests=str(ROOT / "tests"), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "last.pt").exists() and checkpoint.load(out / "last.pt")["step"] >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(out / "last.pt")["step"]
    assert 2 <= killed_at < 8
    resumed, result = _stage1(out)
    assert result["steps"] == 8 and _same_weights(full, resumed)
    assert not list(out.glob(".*.tmp"))


_INTERRUPTED_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_train import STAGE1, _data, _model, _test_xy
    from dualat import train
    from dualat.data import BatchStream
    original = train.Run.checkpoint
    def slow_checkpoint(self):  # time for the parent to interrupt us after a checkpoint
        original(self)
        print("checkpoint", self.step, flush=True)
        time.sleep(0.5)
    train.Run.checkpoint = slow_checkpoint
    stream = BatchStream(_data(), 8, 0, workers=1)  # a data-loader worker gets the Ctrl-C too
    train.train_stage1(_model(), STAGE1, stream, 4, _test_xy(), {out!r}, checkpoint_every=1, progress=True)
    print("finished", flush=True)
    """
)


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal's process has it. A test runner started as a
    background job of a non-interactive shell ignores SIGINT, and its children would inherit that
    (Python then installs no KeyboardInterrupt handler), which is not what these tests are about."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_training_promptly_with_last_pt_intact(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during training ends
    the process non-zero at once: no except swallows KeyboardInterrupt in the loop, the progress
    lines or the data-loader workers; last.pt is the last checkpoint and resumes."""
    full, _ = _stage1(tmp_path / "full")
    out = tmp_path / "interrupted"
    code = _INTERRUPTED_RUN.format(tests=str(ROOT / "tests"), out=str(out))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
        env=os.environ | {"DUALAT_PROGRESS": "lines"}, preexec_fn=_interruptible,
    )  # fmt: skip
    lines = []
    while not lines or not lines[-1].startswith("checkpoint 2"):
        lines.append(proc.stdout.readline())
        assert lines[-1], "".join(lines)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.time()
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "finished" not in rest
    assert time.time() - t0 < 15
    assert 2 <= checkpoint.load(out / "last.pt")["step"] < 8
    resumed, result = _stage1(out)
    assert result["steps"] == 8 and _same_weights(full, resumed)


def test_ctrl_c_stops_a_notebook_stage(tmp_path):
    """Ctrl-C on `python scripts/nb.py ...` (as under `dvc repro`: the kernel runs in its own
    session and gets no signal from the terminal) ends nb.py non-zero within seconds and stops
    the kernel's work."""
    import nbformat

    (tmp_path / "notebooks").mkdir()
    work = (
        "import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\nfor i in range(600):\n    time.sleep(0.1)\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(work + "open('finished', 'w').write('')")])
    nbformat.write(nb, tmp_path / "notebooks" / "busy.ipynb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "nb.py"), "busy", ""], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (tmp_path / "kernel.pid").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    kernel = int((tmp_path / "kernel.pid").read_text())
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches nb.py's group, not the kernel
    t0 = time.time()
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "interrupted" in output, output
    assert time.time() - t0 < 20
    while time.time() - t0 < 20 and Path(f"/proc/{kernel}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{kernel}").exists() and not (tmp_path / "finished").exists()


# --- AutoAttack with fewer than 10 classes ---------------------------------------------------------


def test_autoattack_standard_on_nine_classes(monkeypatch):
    from pyautoattack import AutoAttack

    from dualat.metrics import autoattack_accuracy
    from dualat.models import WideResNet

    original = AutoAttack._set_version

    def small_budgets(self, version="standard"):  # fewer iterations; the 9 target classes stay
        original(self, version)
        self.apgd.n_iter = self.apgd_targeted.n_iter = self.fab.n_iter = 2
        self.square.n_queries = 5

    monkeypatch.setattr(AutoAttack, "_set_version", small_budgets)
    torch.manual_seed(0)
    model = WideResNet(10, 1, 9).eval()  # RestrictedImageNet has 9 classes
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)  # all points start correct, so every attack (targeted ones too) runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = autoattack_accuracy(model, x, y, 0.5, version="standard", batch_size=4)
    assert out["clean"] == 1.0 and 0.0 <= out["robust"] <= 1.0
    assert list(out["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("new")
        raise RuntimeError
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
