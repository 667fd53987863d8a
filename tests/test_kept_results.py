"""No lost or silently wrong evaluation work (issue 15, point 8): a bad FID reference, a data folder
briefly missing, too many seed images asked for, a read-only results folder, and evaluation
records that outlive training-code edits. Tiny models; a few seconds each.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import _model

from dualat import artifacts, checkpoint, config, fid_reference, runs, stages
from dualat.artifacts import StageRefused
from dualat.config import ConfigError
from dualat.data import DataError, DataMissingError
from dualat.evaluation import classification, generation, runner
from dualat.records import NotComputed, read_record
from tests.conftest import shared_data_root

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DATA = shared_data_root() or next(
    (p for p in [Path(os.environ.get("DUALAT_DATA", "/nonexistent"))] if (p / "cifar10_test_00.npz").is_file()), None
)
needs_data = pytest.mark.skipif(DATA is None, reason="offline CIFAR-10 shards not found")


def _cfg(root=DATA, **overrides):
    cfg = config.load(PARAMS, dataset="cifar10", profile="quick", overrides=overrides)
    return dataclasses.replace(cfg, data_root=str(root or ""))


def _trained(folder: Path) -> Path:
    """A WRN-10-1 checkpoint and the status.json of a training stage that computed it."""
    path = checkpoint.save(folder / "final.pt", {"model": _model().state_dict()})
    artifacts.write_status(folder, None)
    return path


def _pooled(x: torch.Tensor) -> np.ndarray:
    """A cheap stand-in for the Inception features: 4x4 average-pooled pixels (N, 48)."""
    return F.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


# --- a bad FID reference is refused before any sampling, by name ------------------------------------

SMALL = {
    "sample.n_samples": 8,
    "sample.n_grid_samples": 4,
    "sample.steps_grid": [1],
    "sample.fid_ref_n": 8,
    "sample.seeds": [0],
    "stage2.eval_fid_samples": 4,
    "data.n_ood": 20,
}


def _reference(path: Path, cfg, spoil: str) -> None:
    """stats.npz under the key generation expects (as the prepare stage writes it), spoilt."""
    feats = np.random.default_rng(0).normal(size=(8, 48))
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
    arrays = {"mu": mu, "sigma": sigma, "feats": feats}
    if spoil == "nan_in_feats":
        arrays["feats"][3, 7] = np.nan
    elif spoil == "nan_in_sigma":  # mu/sigma only: FIDs would be NaN, stored as null
        arrays["sigma"][0, 0] = np.nan
        del arrays["feats"]
    elif spoil == "sigma_shape":
        arrays["sigma"] = sigma[:, :40]
    key = json.dumps(fid_reference.fid_ref_key(cfg), sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, n=8, key=np.array(key), **arrays)


@needs_data
@pytest.mark.parametrize(
    ("spoil", "what"),
    [
        ("nan_in_feats", "1 NaN/inf values in feats"),
        ("nan_in_sigma", "1 NaN/inf values in sigma"),
        ("sigma_shape", "mu of shape (48,) and sigma of shape (48, 40)"),
    ],
)
def test_bad_fid_reference_is_refused_before_sampling(tmp_path, monkeypatch, spoil, what):
    cfg = _cfg(**SMALL)
    ref = tmp_path / "fid_ref" / "stats.npz"
    _reference(ref, cfg, spoil)
    monkeypatch.setattr(generation, "sample_conditional", lambda *a, **k: pytest.fail("sampled"))
    path = _trained(tmp_path / "model")
    with pytest.raises(DataError) as err:
        generation.generation(cfg, "dualat", path, ref, tmp_path / "eval", features=_pooled, progress=False)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{ref}: FID reference is damaged ({what}); delete {ref.parent}")
    assert not (tmp_path / "eval" / "generation.json").exists()


def test_good_reference_passes_and_cached_features_are_checked(tmp_path):
    cfg = _cfg(root=None)
    _reference(tmp_path / "good.npz", cfg, "none")
    fid_reference.check_reference(tmp_path / "good.npz")  # no error
    images = torch.utils.data.TensorDataset(torch.rand(6, 3, 32, 32), torch.arange(6))
    cache = tmp_path / "features.npz"
    feats, _ = fid_reference.real_features(images, 0, _pooled, cache, {"k": 1})
    assert np.isfinite(feats).all() and feats.shape == (6, 48)
    with np.load(cache) as f:
        spoilt = dict(f)
    spoilt["feats"][0, 0] = np.inf
    np.savez(cache, **spoilt)
    with pytest.raises(DataError, match=rf"^{cache}: FID reference is damaged \(1 NaN/inf values in feats\)"):
        fid_reference.real_features(images, 0, _pooled, cache, {"k": 1})


# --- a data folder briefly missing fails the stage and keeps the results ---------------------------


def _compute(metrics):
    def compute(model, seconds):
        if isinstance(metrics, Exception):
            raise metrics
        return metrics

    return compute


def test_missing_data_keeps_a_computed_record_and_fails(tmp_path):
    cfg = _cfg(root=None)
    path, out = _trained(tmp_path / "model"), tmp_path / "eval"
    numbers = dict.fromkeys(runner.METRIC_KEYS["accuracy"], 0.5)
    runner.run("accuracy", cfg, "dualat", path, out, _compute(numbers))
    before = (out / "accuracy.json").read_bytes()
    gone = DataMissingError("cifar10", ["/mnt/share/cifar10"], "mount the share")
    with pytest.raises(StageRefused) as err:
        runner.run("accuracy", cfg, "dualat", path, out, _compute(gone))
    text = str(err.value)
    assert "\n" not in text and text.startswith("cifar10: data not found (tried /mnt/share/cifar10")
    assert f"{out / 'accuracy.json'} keeps its numbers of an earlier run" in text
    assert (out / "accuracy.json").read_bytes() == before


def test_missing_data_without_an_earlier_record_is_recorded_as_not_computed(tmp_path):
    """CIFAR-100 on a machine that never had it: the report still gets its "not computed" cells."""
    cfg = _cfg(root=None)
    path, out = _trained(tmp_path / "model"), tmp_path / "eval"
    gone = DataMissingError("cifar10", ["/mnt/share/cifar10"], "mount the share")
    metrics = runner.run("accuracy", cfg, "dualat", path, out, _compute(gone))
    assert isinstance(metrics["clean_acc"], NotComputed)
    again = runner.run("accuracy", cfg, "dualat", path, out, _compute(gone))  # rerun: still written
    assert isinstance(read_record(out / "accuracy.json")["metrics"]["clean_acc"], NotComputed) and again


def test_prepare_and_train_keep_a_computed_status_when_data_is_missing(tmp_path):
    cfg = _cfg(root=tmp_path / "unmounted")
    prepared, trained = tmp_path / "prepared", tmp_path / "standard_at"
    artifacts.write_status(prepared, None, n_train=2000)
    artifacts.write_status(trained, None, method="standard_at", steps=100)
    before = {p: (p / "status.json").read_bytes() for p in (prepared, trained)}
    with pytest.raises(StageRefused, match=rf"cifar10.*; {prepared} keeps its results of an earlier run"):
        stages.prepare(cfg, prepared)
    with pytest.raises(StageRefused, match=rf"; {trained} keeps its results of an earlier run"):
        stages.train(cfg, "standard_at", trained)
    assert {p: (p / "status.json").read_bytes() for p in (prepared, trained)} == before
    never = tmp_path / "never"  # a dataset that never had data: not computed, as before
    status = stages.train(cfg, "standard_at", never)
    assert status["computed"] is False and "cifar10" in status["reason"]


# --- settings checked before the work --------------------------------------------------------------


@needs_data
def test_too_many_samples_for_the_seed_pool_names_the_key(tmp_path, monkeypatch):
    cfg = _cfg(**SMALL | {"sample.n_samples": 17})  # 20 OOD images, 4 held out: 16 left
    monkeypatch.setattr(generation, "sample_conditional", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(fid_reference, "reference_stats", lambda *a, **k: pytest.fail("reference computed"))
    path = _trained(tmp_path / "model")
    with pytest.raises(ConfigError) as err:
        generation.generation(cfg, "dualat", path, tmp_path / "ref.npz", tmp_path / "eval", features=_pooled)
    assert str(err.value).startswith(
        "quick.cifar10.sample.n_samples is 17, but the OOD source (data.ood: tinyimagenet32) has 20 images, "
        "4 of them held out for selection"
    )
    assert "at most 16" in str(err.value)
    generation.check_seed_pool(dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, n_samples=16)), 20, 16)


def test_read_only_results_folder_fails_before_the_work(tmp_path, monkeypatch):
    cfg = _cfg(root=None)
    path, out = _trained(tmp_path / "model"), tmp_path / "eval"
    out.mkdir()
    if os.geteuid() == 0:  # root writes into read-only folders: fail the probe as a read-only mount would
        real = artifacts.tempfile.mkstemp
        monkeypatch.setattr(
            artifacts.tempfile,
            "mkstemp",
            lambda dir, **k: (
                (_ for _ in ()).throw(OSError(30, "Read-only file system")) if Path(dir) == out else real(dir=dir, **k)
            ),
        )
    else:
        out.chmod(0o555)
    with pytest.raises(StageRefused) as err:
        runner.run("accuracy", cfg, "dualat", path, out, _compute(AssertionError("computed")))
    assert str(err.value).startswith(f"{out} cannot be written (") and "make it writable" in str(err.value)
    out.chmod(0o755)


def test_unknown_method_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="method must be one of standard_at, ratio, dualat, got 'dualatt'"):
        classification.accuracy(_cfg(root=None), "dualatt", tmp_path / "x.pt", tmp_path / "eval")


# --- an evaluation record depends on the checkpoint, evaluation settings and evaluation code -------


def test_record_key_ignores_training_keys_and_follows_evaluation_keys(tmp_path):
    cfg = _cfg(root=None)
    path = _trained(tmp_path / "model")
    key = runner.record_key("accuracy", cfg, "dualat", path)
    longer = dataclasses.replace(cfg, stage2=dataclasses.replace(cfg.stage2, images=cfg.stage2.images * 2))
    assert runner.record_key("accuracy", longer, "dualat", path) == key
    other_eval = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, autoattack_n=7))
    assert runner.record_key("accuracy", other_eval, "dualat", path) != key
    checkpoint.save(path, {"model": _model().state_dict(), "step": 2})
    assert runner.record_key("accuracy", cfg, "dualat", path)["checkpoint_sha256"] != key["checkpoint_sha256"]


def test_evaluation_code_hash_covers_what_evaluation_imports(tmp_path, monkeypatch):
    package = tmp_path / "dualat"
    shutil.copytree(runs.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "PACKAGE", package)

    def digest():
        return runner.evaluation_code_hash()

    evaluation = sorted((package / "evaluation").glob("*.py"))
    used = {p.relative_to(package).as_posix() for p in runs.imported_files(evaluation, package)}
    assert {"sampling.py", "attacks.py", "model_io.py", "data/__init__.py", "metrics/__init__.py"} <= used
    assert not {"train.py", "bookkeeping.py", "stages.py", "curriculum.py"} & used
    first = digest()
    for name in ("train.py", "bookkeeping.py", "stages.py"):  # training code: the records stay valid
        (package / name).write_text((package / name).read_text() + "\nX_TRAINING_ONLY = 1\n")
    assert digest() == first
    (package / "sampling.py").write_text((package / "sampling.py").read_text() + "\nX_SAMPLER = 1\n")
    assert digest() != first
