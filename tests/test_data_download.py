"""Where data is looked up (data folders in order), downloads of the public datasets into
data/raw/ and the Tiny-ImageNet folder reader. No network: torchvision's download runs for real
against a stubbed `urllib.request.urlopen` that serves small fake archives."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from dualat import data, datasets, preflight
from dualat.config import load
from dualat.data import download, fingerprint, tiny
from tests.test_data import as_tensor, fake_images, write_cifar_folder, write_shards

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
RAW = Path("data/raw")  # relative to the working directory: tests chdir into tmp_path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """tmp_path as the working directory (so data/raw/ lies in it), no $DUALAT_DATA, downloads on,
    and a fresh probe cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.delenv(download.DOWNLOAD_ENV, raising=False)
    monkeypatch.setattr(download, "_probed", {})
    return tmp_path


# ---------------------------------------------------------------- data folders, in order


def test_data_roots_order(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.data_roots() == [RAW] and download.download_root() == RAW
    monkeypatch.setenv(data.DATA_ENV, "/shared/datasets")
    assert data.data_roots() == [Path("/shared/datasets"), RAW]  # downloads still go to data/raw
    assert download.download_root() == RAW
    assert data.data_roots("given") == [Path("given")]  # an explicit folder is searched alone
    assert data.data_roots(["a", "b", "a"]) == [Path("a"), Path("b")]
    assert download.download_root(["a", "b"]) == Path("b")


def test_first_folder_holding_a_dataset_wins(workdir, monkeypatch):
    shared = workdir / "shared"
    shared.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(shared))
    x_shared = write_shards(shared, "cifar10_train", [4])
    RAW.mkdir(parents=True)
    x_raw = write_shards(RAW, "cifar10_train", [3])
    x_test = write_shards(RAW, "cifar10_test", [2])  # only data/raw holds the test split
    train, test = data.cifar("cifar10", "train"), data.cifar("cifar10", "test")
    assert len(train) == 4 and torch.allclose(train[0][0], as_tensor(x_shared[0]))
    assert len(test) == 2 and torch.allclose(test[1][0], as_tensor(x_test[1]))
    assert not np.array_equal(x_shared[:3], x_raw)
    assert data.describe("cifar100", "train").startswith("not found")
    assert str(shared) in data.describe("cifar100", "train") and str(RAW) in data.describe("cifar100", "train")
    with pytest.raises(data.DataMissingError) as err:
        data.cifar("cifar100", "train")
    assert str(shared / "cifar-100-python") in str(err.value) and str(RAW / "cifar-100-python") in str(err.value)
    assert "python -m dualat.data.download cifar100" in str(err.value)


def test_fingerprint_lists_the_files_of_every_folder(workdir, monkeypatch):
    shared = workdir / "shared"
    shared.mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(shared))
    write_shards(shared, "cifar10_train", [2])
    before = fingerprint.fingerprint(["cifar10", "cifar100"])
    assert before["roots"] == [str(shared), str(RAW)] and before["files"]["cifar100"] == []
    RAW.mkdir(parents=True)
    write_cifar_folder(RAW, "cifar100")
    after = fingerprint.fingerprint(["cifar10", "cifar100"])
    assert after["sha256"]["cifar10"] == before["sha256"]["cifar10"]
    assert after["sha256"]["cifar100"] != before["sha256"]["cifar100"]
    assert all(path.startswith(str(RAW / "cifar-100-python")) for path, _ in after["files"]["cifar100"])
    alone = fingerprint.fingerprint(["cifar10"], shared)  # one folder: paths relative to it, no "roots"
    assert "roots" not in alone and alone["files"]["cifar10"][0][0] == "cifar10_train_00.npz"


# ---------------------------------------------------------------- stubbed network


class Served(io.BytesIO):
    """What the stubbed urlopen returns: the body, its URL (no redirect) and its length."""

    def __init__(self, url: str, body: bytes) -> None:
        super().__init__(body)
        self.url, self.length = url, len(body)


def serve(monkeypatch, bodies: dict[str, bytes]) -> list[str]:
    """Stub urllib.request.urlopen (which torchvision's download uses) to serve `bodies` by URL, and
    the connect probe to succeed; returns the list of URLs opened."""
    opened = []

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        opened.append(url)
        if url not in bodies:
            raise urllib.error.URLError(f"stub: nothing served at {url}")
        return Served(url, bodies[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(download, "_connect", lambda host, port, timeout: None)
    return opened


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar10_archive(tmp_path: Path, monkeypatch) -> tuple[bytes, np.ndarray, list]:
    """A fake cifar-10-python.tar.gz, with torchvision's CIFAR10 MD5s (archive and every file in
    it) set to the fake's, so that torchvision's checks pass only for these exact bytes."""
    src = tmp_path / "src"
    src.mkdir()
    images, labels = write_cifar_folder(src, "cifar10")
    folder = src / "cifar-10-batches-py"
    monkeypatch.setattr(
        tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)]
    )
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", tvd.CIFAR10.meta | {"md5": md5(folder / "batches.meta")})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    body = buffer.getvalue()
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", hashlib.md5(body).hexdigest())
    return body, images, labels


def test_missing_cifar10_is_downloaded_checked_and_used(workdir, monkeypatch):
    body, images, labels = cifar10_archive(workdir, monkeypatch)
    opened = serve(monkeypatch, {tvd.CIFAR10.url: body})
    assert download.missing(["cifar10", "noise", "rin"]) == ["cifar10"]
    outcome = download.fetch_missing(["cifar10", "noise", "rin"], log=lambda line: None)
    assert outcome == {"cifar10": f"downloaded into {RAW}"}
    assert tvd.CIFAR10.url in opened
    assert sorted(p.name for p in RAW.iterdir()) == ["cifar-10-batches-py"]  # archive and staging removed
    assert data.describe("cifar10", "train") == "cifar-10-batches-py (lossless, torchvision format)"
    train = data.get_dataset("cifar10", "train", None)
    assert len(train) == 20 and train.provenance.startswith("cifar-10-batches-py (lossless")
    assert torch.allclose(train[5][0], as_tensor(images[5])) and train[5][1] == labels[5]
    assert download.missing(["cifar10"]) == [] and download.fetch_missing(["cifar10"]) == {}  # no second download


def test_a_wrong_checksum_leaves_nothing_behind(workdir, monkeypatch):
    body, _, _ = cifar10_archive(workdir, monkeypatch)
    damaged = body[:-1] + bytes([body[-1] ^ 1])
    serve(monkeypatch, {tvd.CIFAR10.url: damaged})
    outcome = download.fetch_missing(["cifar10"], log=lambda line: None)
    assert "not downloaded" in outcome["cifar10"] and "corrupted" in outcome["cifar10"]
    assert list(RAW.iterdir()) == []  # no archive, no half-extracted folder
    with pytest.raises(data.DataMissingError):
        data.cifar("cifar10", "train")


def test_missing_svhn_test_split_is_downloaded(workdir, monkeypatch):
    import scipy.io

    x = fake_images(3)
    src = workdir / "test_32x32.mat"
    scipy.io.savemat(src, {"X": x.transpose(1, 2, 3, 0), "y": np.array([[10], [4], [7]], dtype=np.uint8)})
    url, filename, _ = tvd.SVHN.split_list["test"]
    monkeypatch.setitem(tvd.SVHN.split_list, "test", [url, filename, md5(src)])
    serve(monkeypatch, {url: src.read_bytes()})
    src.unlink()
    assert download.fetch_missing(["svhn"], log=lambda line: None) == {"svhn": f"downloaded into {RAW}"}
    assert sorted(p.name for p in RAW.iterdir()) == ["test_32x32.mat"]  # only the OOD test split
    test = data.svhn("test")
    assert [test[k][1] for k in range(3)] == [0, 4, 7] and torch.allclose(test[2][0], as_tensor(x[2]))


def test_loader_download_flag_fetches_into_the_given_folder(tmp_path, monkeypatch):
    body, images, _ = cifar10_archive(tmp_path, monkeypatch)
    serve(monkeypatch, {tvd.CIFAR10.url: body})
    monkeypatch.setattr(download, "_probed", {})
    test = data.cifar("cifar10", "test", tmp_path / "mine", download=True)
    assert (tmp_path / "mine" / "cifar-10-batches-py").is_dir()
    assert len(test) == 4 and torch.allclose(test[0][0], as_tensor(images[20]))


def test_offline_ends_quickly_in_not_computed(workdir, monkeypatch):
    def hang(*args, **kwargs):  # a firewall that drops packets: connect never answers
        time.sleep(30)  # the probe gave up long before; its thread then ends like a refused connect
        raise OSError("stub: no answer")

    def no_urlopen(*args, **kwargs):
        raise AssertionError("no download may start when the probe fails")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(urllib.request, "urlopen", no_urlopen)
    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 0.5)
    start = time.monotonic()
    outcome = download.fetch_missing(["cifar10", "cifar100", "svhn", "tinyimagenet32"], log=lambda line: None)
    assert time.monotonic() - start < 5  # one probe per host, each bounded by the timeout
    assert set(outcome) == {"cifar10", "cifar100", "svhn", "tinyimagenet32"}
    assert "no answer from www.cs.toronto.edu:443 within 0.5 s" in outcome["cifar10"]
    cfg = load(PARAMS, dataset="cifar10", profile="quick")
    reason = datasets.missing_data(cfg)
    assert reason is not None and reason.reason.startswith("cifar10: data not found")
    assert "python -m dualat.data.download cifar10" in reason.reason


def test_downloads_off(workdir, monkeypatch):
    monkeypatch.setenv(download.DOWNLOAD_ENV, "0")
    monkeypatch.setattr(download, "_connect", lambda *a: pytest.fail("no network with downloads off"))
    assert download.fetch_missing(["svhn"], log=lambda line: None) == {
        "svhn": f"missing from {RAW}; not downloaded ({download.DOWNLOAD_ENV}=0)"
    }


def test_preflight_stage_fetches_then_fingerprints(workdir, monkeypatch, capsys):
    (workdir / "params.yaml").write_text(PARAMS.read_text())
    monkeypatch.setattr(download, "_connect", lambda host, port, timeout: f"cannot reach {host}:{port} (stub)")
    assert preflight.run(out_dir="prepared") == 1  # the first stage: downloads, then stops (no data)
    err = capsys.readouterr().err
    for name in ("cifar10", "cifar100", "svhn", "tinyimagenet32"):  # the quick profile's sets
        assert err.count(f"data: {name} not downloaded (cannot reach") == 1
    fingerprint.main(["cifar10", "sources.json"])  # the data_sources stage after it: no download
    assert "data:" not in capsys.readouterr().err
    assert json.loads((workdir / "sources.json").read_text())["files"]["cifar10"] == []


def test_probe_is_bounded_even_when_dns_hangs(monkeypatch):
    monkeypatch.setattr(download, "_probed", {})

    def hang(*args, **kwargs):  # DNS that never answers; the thread ends later like a refused connect
        time.sleep(30)
        raise OSError("stub: no answer")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    why = download.probe("https://example.invalid/x.tar.gz", timeout=0.3)
    assert time.monotonic() - start < 2 and why == "no answer from example.invalid:443 within 0.3 s"


# ---------------------------------------------------------------- Tiny-ImageNet as distributed


def write_tinyimagenet(root: Path, per_class: int = 3, val: int = 7) -> tuple[list[str], dict]:
    """A tiny-imagenet-200/ folder: 200 wnids, `per_class` 64x64 train JPEGs each (numbered so that
    string order differs from number order), `val` val images; returns wnids and {file: array}."""
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # not sorted in the file
    pixels = {}
    for wnid in wnids:
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for j in (*range(per_class - 1), 10):  # ..., _10: after _2 by number, before it as text
            path = folder / "train" / wnid / "images" / f"{wnid}_{j}.JPEG"
            pixels[str(path)] = save_jpeg(path)
    lines = []
    for k in range(val):
        path = folder / "val" / "images" / f"val_{k}.JPEG"
        pixels[str(path)] = save_jpeg(path)
        lines.append(f"{path.name}\t{wnids[(3 * k) % 200]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids, pixels


def save_jpeg(path: Path) -> np.ndarray:
    """Save a random 64x64 JPEG and return its decoded pixels."""
    Image.fromarray(fake_images(1, 64)[0]).save(path, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def test_tinyimagenet_folder_is_read_class_interleaved_at_32x32(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "TINYIMAGENET_TRAIN_PER_CLASS", 2)
    wnids, pixels = write_tinyimagenet(tmp_path)
    write_shards(tmp_path, "tinyimagenet32_train50pc", [3])  # the distributed folder wins over shards
    train = data.get_dataset("tinyimagenet32", "train", tmp_path)
    assert len(train) == 400 and train.image_hw == (32, 32) and train.classes == wnids
    assert [train[i][1] for i in (0, 1, 199, 200, 201)] == [0, 1, 199, 0, 1]  # image j of class c at j*200+c
    assert train.samples[200][0].endswith(f"{wnids[0]}_1.JPEG")  # numbered order: _0, _1 (not _10)
    path, _ = train.samples[3]
    box = pixels[path].reshape(32, 2, 32, 2, 3).astype(np.float64).mean(axis=(1, 3))  # 2x2 means
    assert np.abs(train[3][0].permute(1, 2, 0).numpy() * 255 - box).max() <= 1.0
    assert train.provenance == data.describe("tinyimagenet32", "train", tmp_path)
    assert "tiny-imagenet-200/train" in train.provenance and "32x32" in train.provenance
    val = data.tinyimagenet32("val", tmp_path, n=5)
    assert [val[k][1] for k in range(5)] == [(3 * k) % 200 for k in range(5)]
    data.check_dataset(train, name="tinyimagenet32", image_size=32)
    with pytest.raises(data.DataError, match="image_size is 64"):
        data.check_dataset(train, name="tinyimagenet32", image_size=64)


def test_incomplete_tinyimagenet_folder_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "TINYIMAGENET_TRAIN_PER_CLASS", 4)  # the fake holds 3 per class
    write_tinyimagenet(tmp_path, val=1)
    with pytest.raises(data.DataError, match="fewer than 4 images .*download it again"):
        data.tinyimagenet32("train", tmp_path)


def test_missing_tinyimagenet_is_downloaded_from_its_zip(workdir, monkeypatch):
    monkeypatch.setattr(tiny, "TINYIMAGENET_TRAIN_PER_CLASS", 2)
    src = workdir / "src"
    write_tinyimagenet(src, val=3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((src / "tiny-imagenet-200").rglob("*")):
            archive.write(path, path.relative_to(src))
    body = buffer.getvalue()
    monkeypatch.setattr(download, "TINYIMAGENET_MD5", hashlib.md5(body).hexdigest())
    serve(monkeypatch, {download.TINYIMAGENET_URL: body})
    assert download.fetch_missing(["tinyimagenet32"], log=lambda line: None) == {
        "tinyimagenet32": f"downloaded into {RAW}"
    }
    cfg = load(PARAMS, dataset="cifar10", profile="quick", overrides={"data.n_ood": 10})
    ood = datasets.ood_set(cfg)
    assert len(ood) == 10 and ood.provenance.startswith("tiny-imagenet-200/train")
    assert data.tinyimagenet32("val", RAW)[2][0].shape == (3, 32, 32)
