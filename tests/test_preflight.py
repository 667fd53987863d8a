"""The pipeline's first stage (dualat.preflight): it stops before any GPU-hour, with one line per
missing thing, when no dataset has training data or one that has it lacks something else; the
legacy_pytorch FID weights download (dualat.fid_weights); the 300K Random Images p_ood loader.

Data are small fake files made here; no network (downloads off, or a file:// URL)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from dualat import config, fid_weights, preflight
from dualat.data import DataError, DataMissingError, describe, download, get_dataset
from dualat.data.catalog import tiny_300k_text
from tests.test_data import as_tensor, fake_images, write_shards

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("cifar10", "cifar100", "rin")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """tmp_path as the project root: params.yaml copied, an empty data folder as $DUALAT_DATA,
    downloads off, torch.hub's cache in tmp_path/torch (empty)."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DUALAT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv(download.DOWNLOAD_ENV, "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME
    return tmp_path


def cifar10_data(folder: Path, ood: bool = True) -> None:
    """Fake CIFAR-10 train/test shards and (with `ood`) Tiny-ImageNet train shards: the quick
    profile's CIFAR-10 sources."""
    write_shards(folder, "cifar10_train", [8])
    write_shards(folder, "cifar10_test", [4])
    if ood:
        write_shards(folder, "tinyimagenet32_train50pc", [4])


def stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m dualat.preflight ARGS` as DVC runs it, in `cwd`, with this test's environment."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dualat.preflight", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def missing_lines(text: str) -> dict[str, int]:
    return {d: text.count(f"preflight: missing: {d} (") for d in DATASETS}


# --- a clone without data ------------------------------------------------------------------------


def test_dvc_repro_without_data_stops_after_the_first_stage(project):
    pytest.importorskip("dvc")
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    env = os.environ | {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, env=env, check=True, timeout=120)
    r = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Running stage 'preflight'" in out and out.count("Running stage") == 1  # nothing after it
    assert missing_lines(out) == {d: 1 for d in DATASETS}  # one line per missing dataset
    assert "python -m dualat.data.download cifar10" in out  # what to do
    assert "no dataset of the quick profile has its training data" in out


def test_no_dataset_with_training_data_fails(project):
    assert preflight.run() == 1
    statuses = preflight.read_statuses()
    assert [s["status"] for s in statuses] == [preflight.MISSING] * 3
    assert "cifar10_train_NN.npz" in statuses[0]["why"]


# --- partial data: skipped, with a summary ----------------------------------------------------------


def test_a_dataset_without_data_is_skipped_and_summarised(project, capsys):
    cifar10_data(project / "data")
    assert preflight.run(fetch=False) == 0
    err = capsys.readouterr().err
    assert missing_lines(err) == {"cifar10": 0, "cifar100": 1, "rin": 1}
    summary = [line for line in err.splitlines() if line.startswith("preflight (quick profile): ")]
    assert len(summary) == 1 and summary[0].split(": ", 1)[1].startswith("ready: cifar10; missing: cifar100 (")
    status = json.loads((project / "data/prepared/cifar10/preflight.json").read_text())
    assert status["status"] == preflight.READY and status["sources"]["p_ood_key"] == "data.ood: tinyimagenet32"
    assert status["fid"]["mode"] == "clean"
    line = stage(project, "--summary", "reports/index.html").stdout.strip()  # the report stage's last line
    assert line.startswith("computed: cifar10; missing: cifar100 (") and "rin (no imagenet/train/" in line
    assert line.endswith("; report: reports/index.html")


def test_status_files_are_rewritten_only_when_their_content_changes(project):
    cifar10_data(project / "data")
    preflight.run(fetch=False)
    file = project / "data/prepared/cifar10/preflight.json"
    os.utime(file, (0, 0))
    preflight.run(fetch=False)
    assert file.stat().st_mtime == 0  # DVC sees no change: nothing downstream reruns


# --- a dataset with training data that lacks something else: stop ----------------------------------


def test_legacy_pytorch_without_weights_stops_naming_the_file(project, capsys):
    params = project / "params.yaml"
    text = params.read_text()
    quick = text.index("\nquick:")
    params.write_text(text[:quick] + text[quick:].replace("fid_mode: clean", "fid_mode: legacy_pytorch"))
    assert config.load(params, dataset="cifar10").sample.fid_mode == "legacy_pytorch"
    cifar10_data(project / "data")
    assert preflight.run() == 1  # the stage's run, downloads off
    lines = [line for line in capsys.readouterr().err.splitlines() if fid_weights.PYTORCH_FID_FILE in line]
    assert len(lines) == 1 and "quick.cifar10.sample.fid_mode: legacy_pytorch" in lines[0]
    assert str(project / "torch" / "hub" / "checkpoints") in lines[0] and "DUALAT_DOWNLOAD=0" in lines[0]
    status = json.loads((project / "data/prepared/cifar10/preflight.json").read_text())
    assert status["status"] == preflight.BLOCKED and status["fid"]["weights"] is None


def test_missing_p_ood_stops_and_names_the_key_and_choices(project, capsys):
    cifar10_data(project / "data", ood=False)
    assert preflight.run(fetch=False) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("preflight: cifar10: p_ood (")]
    assert len(lines) == 1 and "quick.cifar10.data.ood: tinyimagenet32" in lines[0]
    assert "python -m dualat.data.download tinyimagenet32" in lines[0] and "tiny_images_300k" in lines[0]


def test_missing_test_split_and_package_stop(project, capsys, monkeypatch):
    folder = project / "data"
    write_shards(folder, "cifar10_train", [8])
    write_shards(folder, "tinyimagenet32_train50pc", [4])
    real = preflight.find_spec
    monkeypatch.setattr(preflight, "find_spec", lambda name: None if name == "pyautoattack" else real(name))
    assert preflight.run(fetch=False) == 1
    err = capsys.readouterr().err
    assert "preflight: cifar10: test split: not found: neither cifar-10-batches-py/ nor cifar10_test_NN.npz" in err
    assert "preflight: cifar10: package pyautoattack not installed: pip install pyautoattack" in err


def test_too_little_disk_stops(project, capsys, monkeypatch):
    cifar10_data(project / "data")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 10**7, 10**7))  # 10 MB free
    assert preflight.run(fetch=False) == 1
    need = preflight.DISK_GB["quick"]["cifar10"]
    assert (
        f"disk: 0.0 GB free at {project}, the quick profile's cifar10 need about {need:.1f} GB"
        in capsys.readouterr().err
    )


def test_paper_disk_estimates_follow_the_readme_column():
    stage1 = 0.56 + 2 * 0.37  # last.pt + best.pt + final.pt
    per_dataset = 0.05 + stage1 + stage1 + 1.7 + 3 * 0.1  # prepare, stage 1, RATIO, stage 2, evaluations
    assert preflight.DISK_GB["paper"]["cifar100"] == pytest.approx(per_dataset)
    assert preflight.DISK_GB["paper"]["cifar10"] == pytest.approx(per_dataset + 4 * 1.7)  # + Figure 2's ablation
    assert set(preflight.DISK_GB) == set(config.PROFILES)


def test_ood_test_splits_agree_with_the_evaluation():
    from dualat.evaluation.ood_sets import OOD_SPLITS

    assert {k: v for k, v in OOD_SPLITS.items() if v not in ("test", "")} == preflight.OOD_TEST_SPLITS


# --- legacy_pytorch weights arrive by themselves when online ----------------------------------------


@pytest.fixture
def weights_release(tmp_path, monkeypatch) -> tuple[Path, bytes]:
    """A stand-in for pytorch-fid's release: a local file served by a file:// URL; torch.hub's
    cache in tmp_path/hub (empty)."""
    content = os.urandom(3000)
    release = tmp_path / "release" / fid_weights.PYTORCH_FID_FILE
    release.parent.mkdir()
    release.write_bytes(content)
    monkeypatch.setattr(fid_weights, "PYTORCH_FID_URL", release.as_uri())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(download.DOWNLOAD_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints", content


def test_pytorch_fid_weights_are_fetched_with_a_hash_check(weights_release, monkeypatch):
    cache, content = weights_release
    monkeypatch.setattr(fid_weights, "PYTORCH_FID_SHA256_PREFIX", hashlib.sha256(content).hexdigest()[:8])
    path = fid_weights.fetch_pytorch_fid(progress=False)
    assert path == cache / fid_weights.PYTORCH_FID_FILE and path.read_bytes() == content
    assert fid_weights.locate("legacy_pytorch") == path  # the lookup the stages use finds it
    monkeypatch.setattr(fid_weights, "PYTORCH_FID_URL", "file:///nonexistent")  # present: no second download
    assert fid_weights.fetch_pytorch_fid(progress=False) == path


def test_a_wrong_hash_leaves_nothing_behind(weights_release):
    cache, content = weights_release
    assert hashlib.sha256(content).hexdigest()[:8] != fid_weights.PYTORCH_FID_SHA256_PREFIX
    with pytest.raises(fid_weights.WeightsMissing, match="invalid hash value") as err:
        fid_weights.fetch_pytorch_fid(progress=False)
    assert fid_weights.PYTORCH_FID_FILE in str(err.value) and "sample.fid_weights" in str(err.value)
    assert list(cache.iterdir()) == []  # no partial file


def test_offline_or_downloads_off_keeps_the_not_computed_reason(weights_release, monkeypatch):
    monkeypatch.setattr(fid_weights, "PYTORCH_FID_URL", "https://github.com/x/y.pth")
    monkeypatch.setattr(download, "_probed", {})
    monkeypatch.setattr(download, "_connect", lambda host, port, timeout: f"cannot reach {host}:{port} (stub)")
    with pytest.raises(fid_weights.WeightsMissing, match=r"not downloaded \(cannot reach github.com:443 \(stub\)\)"):
        fid_weights.fetch_pytorch_fid(progress=False)
    monkeypatch.setenv(download.DOWNLOAD_ENV, "0")
    monkeypatch.setattr(download, "_connect", lambda *a: pytest.fail("no network with downloads off"))
    with pytest.raises(fid_weights.WeightsMissing, match="not downloaded \\(DUALAT_DOWNLOAD=0\\)"):
        fid_weights.fetch_pytorch_fid(progress=False)
    from dualat import metrics  # the stages' lookup: the same file named as "not computed"

    reason = metrics.fid_weights("legacy_pytorch")
    assert isinstance(reason, metrics.NotComputed) and fid_weights.PYTORCH_FID_FILE in reason.reason


# --- p_ood: Outlier Exposure's 300K Random Images ---------------------------------------------------


def test_tiny_images_300k_reads_the_released_npy_format(tmp_path):
    x = fake_images(12)  # the release: uint8 (300000, 32, 32, 3)
    np.save(tmp_path / "300K_random_images.npy", x)
    ds = get_dataset("tiny_images_300k", root=tmp_path, n=10)
    assert len(ds) == 10 and ds[7][1] == 0 and torch.equal(ds[7][0], as_tensor(x[7]))
    assert describe("tiny_images_300k", root=tmp_path) == tiny_300k_text()  # what records carry, without reading
    assert ds.provenance == tiny_300k_text() + "; 12 images, not the release's 300000"
    assert len(get_dataset("tiny_images_300k", root=tmp_path)) == 12
    np.save(tmp_path / "300K_random_images.npy", x.astype(np.float32))
    with pytest.raises(DataError, match="300K_random_images.npy holds float32"):
        get_dataset("tiny_images_300k", root=tmp_path)
    (tmp_path / "300K_random_images.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match="is not a .npy array"):
        get_dataset("tiny_images_300k", root=tmp_path)
    with pytest.raises(DataMissingError, match="people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy"):
        get_dataset("tiny_images_300k", root=tmp_path / "empty")


def test_tiny_images_300k_as_p_ood_passes_the_preflight(project):
    folder = project / "data"
    write_shards(folder, "cifar10_train", [8])
    write_shards(folder, "cifar10_test", [4])
    np.save(folder / "300K_random_images.npy", fake_images(5))
    params = project / "params.yaml"
    text = params.read_text()
    old = "      ood: tinyimagenet32     # offline stand-in for 80M Tiny Images (shared/datasets)\n"
    quick = text.index("\nquick:")
    params.write_text(text[:quick] + text[quick:].replace(old, "      ood: tiny_images_300k\n", 1))
    assert config.load(params, dataset="cifar10").data.ood == "tiny_images_300k"
    assert preflight.run(fetch=False) == 0
    status = json.loads((project / "data/prepared/cifar10/preflight.json").read_text())
    assert status["sources"]["p_ood_key"] == "data.ood: tiny_images_300k"
    assert status["sources"]["p_ood"].startswith("300K_random_images.npy (300K Random Images of Outlier Exposure")


def test_tiny_images_300k_is_downloaded_with_its_md5_when_chosen(tmp_path, monkeypatch):
    from tests.test_data_download import serve

    monkeypatch.chdir(tmp_path)  # data/raw/ in tmp_path
    monkeypatch.delenv("DUALAT_DATA", raising=False)
    monkeypatch.delenv(download.DOWNLOAD_ENV, raising=False)
    monkeypatch.setattr(download, "_probed", {})
    x = fake_images(6)
    np.save(tmp_path / "release.npy", x)
    body = (tmp_path / "release.npy").read_bytes()
    opened = serve(monkeypatch, {download.TINY_300K_URL: body})
    monkeypatch.setattr(download, "TINY_300K_MD5", hashlib.md5(body + b"x").hexdigest())  # a wrong MD5
    outcome = download.fetch_missing(["tiny_images_300k"], log=lambda line: None)
    assert "not downloaded" in outcome["tiny_images_300k"] and list(Path("data/raw").iterdir()) == []
    monkeypatch.setattr(download, "TINY_300K_MD5", hashlib.md5(body).hexdigest())
    assert download.fetch_missing(["tiny_images_300k"], log=lambda line: None) == {
        "tiny_images_300k": "downloaded into data/raw"
    }
    assert set(opened) == {download.TINY_300K_URL}
    assert torch.equal(get_dataset("tiny_images_300k")[4][0], as_tensor(x[4]))
