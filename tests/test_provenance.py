"""Issue 9, points 5, 9 and 13: OOD test images drawn at random (seeded, recorded), external
checkpoints evaluated without a training stage, and data provenance (lossless CIFAR first; every
record says which source). Fake data in tmp_path and a WRN-10-1; a few seconds each."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dualat import artifacts, data, datasets, fid_reference, model_io, stages
from dualat.config import load
from dualat.data import DataError
from dualat.evaluation import classification, ood_detection, ood_sets
from dualat.records import NotComputed
from tests.conftest import shared_data_root
from tests.test_data import as_tensor, fake_images, write_cifar_folder, write_shards
from tests.test_evaluate import _quick_autoattack

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _cfg(root, profile="quick", **overrides):
    cfg = load(PARAMS, dataset="cifar10", profile=profile, overrides=overrides)
    return dataclasses.replace(cfg, data_root=str(root))


# --- point 5: OOD test sets drawn at random over the whole set -----------------------------------


def test_draw_is_seeded_and_covers_the_whole_set():
    labels = np.arange(1000) // 100  # 10 classes, sorted by class as in ImageNet's file order
    a, b = ood_sets.draw_indices(1000, 100, 0), ood_sets.draw_indices(1000, 100, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and a.dtype == np.int64
    assert len(np.unique(labels[a])) >= 9  # the draw hits (nearly) every class ...
    assert len(np.unique(labels[:100])) == 1  # ... the first 100 in file order hit one
    assert not np.array_equal(a, ood_sets.draw_indices(1000, 100, 1))
    assert np.array_equal(ood_sets.draw_indices(50, 100, 0), np.arange(50))  # fewer: all of them


def _sorted_ood_set(root: Path) -> np.ndarray:
    """A fake Tiny-ImageNet val set of 1000 images in two shards, sorted by class (y = i // 100)."""
    x = fake_images(1000)
    for k in range(2):
        part = slice(500 * k, 500 * (k + 1))
        np.savez(root / f"tinyimagenet32_val_{k:02d}.npz", x=x[part], y=np.arange(1000)[part] // 100)
    return x


def test_ood_images_are_drawn_recorded_and_reproducible(tmp_path):
    x = _sorted_ood_set(tmp_path)
    cfg = _cfg(tmp_path, **{"evaluate.ood_n": 100})
    images, draw = ood_sets.ood_images(cfg, "tinyimagenet32")
    idx = ood_sets.draw_indices(1000, 100, cfg.evaluate.seed)
    assert images.shape == (100, 3, 32, 32)
    assert torch.equal(images[7], as_tensor(x[idx[7]]))  # the drawn items, not the first ones
    assert len(np.unique(idx // 100)) >= 9
    assert draw["seed"] == 0 and draw["set_size"] == 1000 and "tinyimagenet32_val_NN.npz" in draw["provenance"]
    again = ood_sets.ood_images(cfg, "tinyimagenet32")
    assert torch.equal(again[0], images) and again[1] == draw
    other = ood_sets.ood_images(_cfg(tmp_path, **{"evaluate.ood_n": 100, "evaluate.seed": 1}), "tinyimagenet32")
    assert other[1]["indices_sha256"] != draw["indices_sha256"] and other[1]["seed"] == 1
    everything, all_draw = ood_sets.ood_images(_cfg(tmp_path, **{"evaluate.ood_n": 5000}), "tinyimagenet32")
    assert len(everything) == all_draw["set_size"] == 1000  # a smaller set is taken whole


def test_wrong_ood_data_is_not_swallowed(tmp_path):
    _sorted_ood_set(tmp_path)
    (tmp_path / "tinyimagenet32_val_01.npz").rename(tmp_path / "tinyimagenet32_val_02.npz")  # a gap
    with pytest.raises(DataError, match="tinyimagenet32_val_01.npz is missing"):
        ood_sets.ood_images(_cfg(tmp_path, **{"evaluate.ood_n": 10}), "tinyimagenet32")


# --- point 13: provenance; the lossless CIFAR folder wins over the JPEG shards -------------------


def test_lossless_cifar_folder_wins_over_jpeg_shards(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # fake md5s
    write_shards(tmp_path, "cifar10_train", [6, 4])
    write_shards(tmp_path, "cifar10_test", [5])
    images, _ = write_cifar_folder(tmp_path, "cifar10")
    train = data.cifar("cifar10", "train", tmp_path)
    assert len(train) == 20 and torch.equal(train[3][0], as_tensor(images[3]))  # the folder's images
    assert train.provenance == "cifar-10-batches-py (lossless, torchvision format)"
    assert data.describe("cifar10", "train", tmp_path) == train.provenance
    provenance = datasets.data_provenance(_cfg(tmp_path))
    assert "lossless" in provenance["train"] and "lossless" in provenance["test"]

    import shutil

    shutil.rmtree(tmp_path / "cifar-10-batches-py")  # only the shards are left
    train = data.cifar("cifar10", "train", tmp_path)
    assert len(train) == 10 and "cifar10_train_NN.npz (2 shards; JPEG" in train.provenance
    assert data.describe("cifar10", "train", tmp_path) == train.provenance
    assert data.describe("cifar100", "train", tmp_path).startswith("not found")


def test_prepare_status_says_which_source(tmp_path, monkeypatch):
    write_shards(tmp_path, "cifar10_train", [6])
    monkeypatch.setattr(datasets, "missing_data", lambda cfg: None)  # only the status is under test
    monkeypatch.setattr(datasets, "train_set", lambda cfg: [])
    monkeypatch.setattr(datasets, "test_set", lambda cfg: [])
    monkeypatch.setattr(datasets, "ood_set", lambda cfg: [])
    monkeypatch.setattr(fid_reference, "reference_stats", lambda cfg, path: (np.zeros(2), None))
    status = stages.prepare(_cfg(tmp_path), tmp_path / "prepared")
    saved = json.loads((tmp_path / "prepared" / "status.json").read_text())
    assert saved["provenance"] == status["provenance"]
    assert "JPEG" in saved["provenance"]["train"] and saved["provenance"]["test"].startswith("not found")


def _tiny_images(root: Path, records: int = 10) -> None:
    with open(root / "tiny_images.bin", "wb") as fh:
        for img in fake_images(records):
            fh.write(img.flatten(order="F").tobytes())


def test_tiny_images_exclusion_list_is_a_params_key(tmp_path):
    _tiny_images(tmp_path)
    cfg = _cfg(tmp_path, profile="paper")
    assert cfg.data.ood == "tiny_images" and cfg.data.ood_exclude == "80mn_cifar_idxs.txt"
    with pytest.warns(UserWarning, match="80mn_cifar_idxs.txt not found"):
        ds = datasets.ood_set(cfg)  # the paper profile's list is used when present: not yet
    assert len(ds) == 10 and "no exclusion list" in ds.provenance and "not found" in ds.provenance
    (tmp_path / "80mn_cifar_idxs.txt").write_text("3\n5\n10\n")  # 1-based record numbers
    ds = datasets.ood_set(cfg)
    assert len(ds) == 7 and "without the records listed in 80mn_cifar_idxs.txt" in ds.provenance
    assert datasets.data_provenance(cfg)["p_ood"] == ds.provenance
    assert len(datasets.ood_set(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, ood_exclude="")))) == 10


# --- point 9: a released-layout checkpoint evaluated end to end, without a training stage ---------


def test_external_checkpoint_is_evaluated_end_to_end(tiny_wrn, tmp_path, monkeypatch):
    root = shared_data_root()
    if root is None:
        pytest.skip("offline CIFAR-10 shards not found")
    _quick_autoattack(monkeypatch)
    released = tmp_path / "released" / "ratio_cifar10.pt"  # no status.json beside it
    released.parent.mkdir()
    state = {f"module.{k}": v for k, v in tiny_wrn.state_dict().items()}  # the released layout
    torch.save({"state_dict": state, "epoch": 300}, released)
    overrides = {
        "evaluate.checkpoints": {"standard_at": "", "ratio": str(released), "dualat": ""},
        "data.n_test": 32,
        "evaluate.autoattack_n": 4,
        "evaluate.pgd.steps": 2,
        "evaluate.ood_n": 8,
        "evaluate.ood_sets": ["tinyimagenet32", "noise"],
        "evaluate.ood_attack.steps": 1,
    }
    cfg = _cfg(root, **overrides)
    path, why = model_io.selected_model(cfg, "ratio")
    assert path == released and why == f"external checkpoint {released} (evaluate.checkpoints.ratio)"
    assert model_io.trained_model(cfg, "ratio")[0] == Path("models/cifar10/ratio/best.pt")  # training's own

    acc = classification.accuracy(cfg, "ratio", path, tmp_path / "accuracy", progress=False)
    x, y = datasets.stack(datasets.test_set(cfg))
    with torch.no_grad():
        expected = (tiny_wrn.eval()(x).argmax(1) == y).float().mean().item()
    assert acc["clean_acc"] == pytest.approx(expected) and acc["autoattack"]["n"] == 4  # this file's weights
    ood = ood_detection.ood(cfg, "ratio", path, tmp_path / "ood", progress=False)
    assert ood["sets"]["tinyimagenet32"]["n"] == 8 and 0 <= ood["sets"]["noise"]["neg_energy"]["clean"] <= 1

    from dualat.records import sha256_file

    for group in ("accuracy", "ood"):
        extra = json.loads((tmp_path / group / f"{group}.json").read_text())["extra"]
        assert extra["model_source"] == f"external: {released} (sha256 {sha256_file(released)})"
        assert extra["model_file"] == why
        prov = extra["data_provenance"]
        assert "cifar10_test_NN.npz" in prov["test"] and "JPEG" in prov["test"]
        assert set(prov["ood_sets"]) == {"tinyimagenet32", "noise"}


def test_trained_and_missing_external_models_are_named(tiny_wrn, tmp_path):
    from dualat import checkpoint

    cfg = _cfg(tmp_path / "no-data", **{"evaluate.checkpoints.dualat": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*evaluate\.checkpoints\.dualat"):
        classification.accuracy(cfg, "dualat", model_io.selected_model(cfg, "dualat")[0], tmp_path / "out")
    # a model of this pipeline (status.json beside it) is "trained here"; missing data: not computed
    path = checkpoint.save(tmp_path / "model" / "final.pt", {"model": tiny_wrn.state_dict()})
    artifacts.write_status(tmp_path / "model", None)
    classification.accuracy(cfg, "standard_at", path, tmp_path / "out", progress=False)
    extra = json.loads((tmp_path / "out" / "accuracy.json").read_text())["extra"]
    assert extra["model_source"] == f"trained here ({path}: given by the caller)"
    assert extra["data_provenance"]["train"].startswith("not found")


def test_a_stage_without_data_records_no_model(tmp_path):
    """A dataset whose data is missing: its training stage computed no model, so the evaluation
    record says "no model: <why>", not "trained here"."""
    cfg = _cfg(tmp_path / "no-data")
    reason = "CIFAR-100 training data not found under /nowhere"
    artifacts.write_status(tmp_path / "model", NotComputed(reason))
    classification.accuracy(cfg, "ratio", tmp_path / "model" / "best.pt", tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert record["extra"]["model_source"] == f"no model: {reason}"
