"""Wrong data fails fast (issue 8, point 8): each fault raises DataError naming the file or the
config key at fault, instead of training on silently wrong data. Small fake files in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dualat import data, datasets, records
from dualat.config import load

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
rng = np.random.default_rng(0)


def images(n: int, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def labels(n: int, num_classes: int = 10) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % num_classes


def write_npz(path: Path, **arrays) -> Path:
    """An .npz like the offline shards: one LZMA-compressed .npy member per array."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(value))
    return path


def write_shard(root: Path, name: str, n: int = 6, size: int = 32, **arrays) -> Path:
    arrays = {"x": images(n, size), "y": labels(n)} | arrays
    return write_npz(root / name, **arrays)


def cfg_for(root: Path, **overrides):
    """The quick cifar10 profile reading from `root` (p_ood: tinyimagenet32 shards there)."""
    cfg = load(PARAMS, dataset="cifar10", profile="quick", overrides=overrides)
    return dataclasses.replace(cfg, data_root=str(root))


def raises_naming(call, *names: str, error=data.DataError) -> str:
    """The message of the `error` that call() raises, checked to contain every name."""
    with pytest.raises(error) as err:
        call()
    msg = str(err.value)
    for name in names:
        assert name in msg, msg
    return msg


# ---------------------------------------------------------------- which files are shards


def test_stray_copies_of_a_shard_are_not_loaded(tmp_path):
    write_shard(tmp_path, "cifar10_train_00.npz", n=6)
    write_shard(tmp_path, "cifar10_train_00 (1).npz", n=5)
    write_shard(tmp_path, "cifar10_train_00.npz.bak", n=4)
    write_shard(tmp_path, "cifar10_train_lossless_first4000.npz", n=3)
    assert len(data.cifar("cifar10", "train", tmp_path)) == 6
    assert data.find_shards(tmp_path, "cifar10_train") == [tmp_path / "cifar10_train_00.npz"]


def test_only_a_copy_of_a_shard_is_missing_data_naming_it(tmp_path):
    write_shard(tmp_path, "tinyimagenet32_val_00 (1).npz")
    raises_naming(
        lambda: data.tinyimagenet32("val", tmp_path),
        "tinyimagenet32_val_00 (1).npz",
        "ignored",
        error=data.DataMissingError,
    )


def test_gap_in_shard_numbers_names_the_missing_shard(tmp_path):
    write_shard(tmp_path, "cifar10_train_00.npz")
    write_shard(tmp_path, "cifar10_train_02.npz")
    raises_naming(lambda: data.cifar("cifar10", "train", tmp_path), "cifar10_train_01.npz", "restore")


# ---------------------------------------------------------------- unreadable or malformed shards


def test_truncated_shard_names_the_file(tmp_path):
    file = write_shard(tmp_path, "cifar10_test_00.npz", n=20)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(file), "truncated or corrupt", "good copy")


def test_corrupt_lzma_names_the_file(tmp_path):
    file = write_shard(tmp_path, "cifar10_test_00.npz", n=20)
    raw = bytearray(file.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)  # inside the compressed x member
    file.write_bytes(bytes(raw))
    raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(file), "cannot be read")


def test_wrong_array_names_name_the_file(tmp_path):
    file = write_npz(tmp_path / "cifar10_test_00.npz", images=images(4), labels=labels(4))
    raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(file), "'x'", "'y'")


@pytest.mark.parametrize(
    ("x", "what"),
    [
        (images(4).astype(np.float32), "float32"),  # wrong dtype
        (images(4)[..., 0], "(4, 32, 32)"),  # grey, wrong shape
    ],
)
def test_wrong_image_dtype_or_shape_names_the_file(tmp_path, x, what):
    file = write_shard(tmp_path, "cifar10_test_00.npz", x=x, y=labels(4))
    raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(file), what, "uint8 (N, H, W, 3)")


def test_float_labels_name_the_file(tmp_path):
    file = write_shard(tmp_path, "cifar10_test_00.npz", n=4, y=np.zeros(4))
    raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(file), "labels 'y'", "float64")


def test_x_and_y_of_different_lengths_name_the_file(tmp_path):
    file = write_shard(tmp_path, "cifar10_train_00.npz", n=8, y=labels(10))
    # n_train=4 <= len(y) trained on mismatched labels before
    raises_naming(lambda: data.cifar("cifar10", "train", tmp_path, n=4), str(file), "8 images but 10 labels")


def test_shards_of_different_image_sizes_name_the_file(tmp_path):
    write_shard(tmp_path, "tinyimagenet32_val_00.npz")
    other = write_shard(tmp_path, "tinyimagenet32_val_01.npz", size=64)
    raises_naming(lambda: data.tinyimagenet32("val", tmp_path), str(other), "64x64")


# ---------------------------------------------------------------- labels


def test_cifar10_label_out_of_range_names_file_and_value(tmp_path):
    file = write_shard(tmp_path, "cifar10_train_00.npz", n=5, y=np.array([0, 3, 10, 1, 2]))
    raises_naming(lambda: data.get_dataset("cifar10", "train", tmp_path), str(file), "label 10", "[0, 10)")


def test_negative_tinyimagenet_label_names_the_file(tmp_path):
    write_shard(tmp_path, "tinyimagenet32_train50pc_00.npz", n=3, y=np.array([0, 199, 5]))
    file = write_shard(tmp_path, "tinyimagenet32_train50pc_01.npz", n=3, y=np.array([0, -1, 5]))
    raises_naming(lambda: data.tinyimagenet32("train", tmp_path), str(file), "label -1", "[0, 200)")


def test_svhn_label_out_of_range_names_the_file(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *a, **k: True)
    y = np.array([[10], [1], [11]], dtype=np.uint8)  # 10 is digit 0; 11 is no digit
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": images(3).transpose(1, 2, 3, 0), "y": y})
    raises_naming(lambda: data.svhn("test", tmp_path), "test_32x32.mat", "label 11")


# ---------------------------------------------------------------- SHA256SUMS


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_mismatch_names_file_and_both_digests(tmp_path):
    good = write_shard(tmp_path, "cifar10_test_00.npz")
    bad = write_shard(tmp_path, "cifar10_test_01.npz")
    wrong = "0" * 64
    (tmp_path / "SHA256SUMS").write_text(f"{sha256(good)}  {good.name}\n{wrong} *{bad.name}\n")
    assert len(data.cifar("cifar10", "test", tmp_path, n=6)) == 6  # only the listed, good shard read
    msg = raises_naming(lambda: data.cifar("cifar10", "test", tmp_path), str(bad), wrong, sha256(bad))
    assert "SHA256SUMS" in msg


def test_shard_not_in_sha256sums_is_accepted(tmp_path):
    listed = write_shard(tmp_path, "cifar10_test_00.npz")
    write_shard(tmp_path, "cifar10_test_01.npz")  # made locally, not listed
    (tmp_path / "SHA256SUMS").write_text(f"{sha256(listed)}  {listed.name}\n")
    assert len(data.cifar("cifar10", "test", tmp_path)) == 12


def test_malformed_sha256sums_line_names_the_file(tmp_path):
    file = write_shard(tmp_path, "cifar10_test_00.npz")
    (tmp_path / "SHA256SUMS").write_text(f"{sha256(file)[:40]}  {file.name}\n")
    raises_naming(lambda: data.verify_sha256(file), "SHA256SUMS line 1")


def test_sha256_is_computed_once_per_file_version(tmp_path, monkeypatch):
    file = write_shard(tmp_path, "cifar10_test_00.npz")
    (tmp_path / "SHA256SUMS").write_text(f"{sha256(file)}  {file.name}\n")
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(records.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        data.verify_sha256(file)
    assert len(calls) == 1


@pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason="no offline data")
def test_real_cifar10_test_shards_pass_verification():
    files = data.find_shards(SHARED, "cifar10_test")
    assert [f.name for f in files] == ["cifar10_test_00.npz", "cifar10_test_01.npz"]
    listed = (SHARED / "SHA256SUMS").read_text()
    for file in files:
        data.verify_sha256(file)  # raises on a mismatch
        assert f"{data.file_sha256(file)}  {file.name}" in listed


# ---------------------------------------------------------------- dataset against the config


def test_n_larger_than_the_dataset_names_the_config_key(tmp_path):
    write_shard(tmp_path, "cifar10_train_00.npz", n=6)
    msg = raises_naming(
        lambda: data.get_dataset("cifar10", "train", tmp_path, n=7, n_key="data.n_train"),
        "data.n_train is 7",
        "cifar10 train holds 6 images",
        "use 0 for all",
    )
    err = data.TooFewImages(7, 6, "cifar10 train", "data.n_train")
    assert str(pickle.loads(pickle.dumps(err))) == msg


def test_image_size_differs_from_config(tmp_path):
    file = write_shard(tmp_path, "cifar10_train_00.npz", size=64)
    ds = data.get_dataset("cifar10", "train", tmp_path)
    raises_naming(
        lambda: data.check_dataset(ds, name="cifar10", image_size=32, num_classes=10),
        "data.image_size is 32",
        f"{file} holds 64x64 images",
    )
    noise = data.get_dataset("noise", n=2)
    raises_naming(lambda: data.check_dataset(noise, name="noise", image_size=224), "224", "32x32")


def test_num_classes_differs_from_dataset():
    ds = data.ArrayImages(images(2), labels(2))
    raises_naming(
        lambda: data.check_dataset(ds, name="cifar10", image_size=32, num_classes=100),
        "data.num_classes is 100 but cifar10 has 10 classes",
    )
    assert data.check_dataset(ds, name="cifar10", image_size=32, num_classes=10) is ds


def write_quick_data(root: Path, size: int = 32) -> None:
    """Shards for the quick cifar10 profile: 12 train, 6 test images and a 32x32 p_ood."""
    write_shard(root, "cifar10_train_00.npz", n=12, size=size)
    write_shard(root, "cifar10_test_00.npz", n=6, size=size)
    write_shard(root, "tinyimagenet32_train50pc_00.npz", n=8, y=labels(8, 200))


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"data.n_train": 13}, ["data.n_train is 13", "cifar10 train holds 12"]),
        ({"data.n_test": 7}, ["data.n_test is 7", "cifar10 test holds 6"]),
        ({"data.n_ood": 9}, ["data.n_ood is 9", "tinyimagenet32 train holds 8"]),
        # data.num_classes against the dataset is checked when params load (tests/test_faults.py)
        ({"data.image_size": 64}, ["data.image_size is 64", "cifar10_train_00.npz holds 32x32"]),
    ],
)
def test_pipeline_checks_data_against_config(tmp_path, overrides, names):
    write_quick_data(tmp_path)
    cfg = cfg_for(tmp_path, **{"data.n_train": 0, "data.n_test": 0, "data.n_ood": 0} | overrides)
    raises_naming(lambda: datasets.missing_data(cfg), *names)


def test_pipeline_accepts_matching_data(tmp_path):
    write_quick_data(tmp_path)
    cfg = cfg_for(tmp_path, **{"data.n_train": 0, "data.n_test": 0, "data.n_ood": 0})
    assert datasets.missing_data(cfg) is None
    assert len(datasets.train_set(cfg)) == 12 and len(datasets.ood_set(cfg)) == 8


def test_pipeline_rejects_64x64_training_images(tmp_path):
    write_quick_data(tmp_path, size=64)
    cfg = cfg_for(tmp_path, **{"data.n_train": 0, "data.n_test": 0, "data.n_ood": 0})
    raises_naming(lambda: datasets.train_set(cfg), "data.image_size is 32", "cifar10_train_00.npz holds 64x64")


# ---------------------------------------------------------------- other array files


def test_truncated_tiny_images_bin_names_the_file(tmp_path):
    (tmp_path / "tiny_images.bin").write_bytes(bytes(3072 * 2 + 100))
    raises_naming(
        lambda: data.tiny_images(tmp_path), "tiny_images.bin", "not a multiple of 3072 bytes (one 32x32x3 record)"
    )


def test_unreadable_exclusion_list_names_the_file(tmp_path):
    (tmp_path / "tiny_images.bin").write_bytes(bytes(3072 * 4))
    bad = tmp_path / "80mn_cifar_idxs.txt"
    bad.write_text("3\nfour\n")
    raises_naming(lambda: data.tiny_images(tmp_path, exclude_files=[bad]), str(bad), "one integer per line")
