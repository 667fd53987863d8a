"""Tests of dualat.data on small fake files in every real format (fast, CPU only)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dualat import data

SHARED = Path("/work/shared/datasets")
rng = np.random.default_rng(0)


def fake_images(n: int, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def as_tensor(img_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img_hwc).permute(2, 0, 1).float() / 255


# ---------------------------------------------------------------- paths and errors


def test_data_root_precedence(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.data_root(None) == Path("data/raw")
    monkeypatch.setenv(data.DATA_ENV, "/env/dir")
    assert data.data_root("") == Path("/env/dir")
    assert data.data_root("given") == Path("given")


def test_import_is_light():
    code = "import sys, dualat.data; print('torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda r: data.cifar("cifar100", "train", r), ["cifar100", "cifar-100-python"]),
        (lambda r: data.cifar("cifar10", "test", r), ["cifar10_test_NN.npz", "cifar-10"]),
        (lambda r: data.svhn("test", r), ["svhn", "test_32x32.mat"]),
        (lambda r: data.tiny_images(r), ["tiny_images", "tiny_images.bin"]),
        (lambda r: data.tinyimagenet32("val", r), ["tinyimagenet32_val_NN.npz"]),
        (lambda r: data.restricted_imagenet("val", r), ["RestrictedImageNet", "imagenet"]),
        (lambda r: data.imagenet_od("train", r), ["ImageNetOD", "imagenet"]),
        (lambda r: data.image_folder(Path(r) / "nope"), ["image folder", "nope"]),
    ],
)
def test_missing_source_raises_helpful_error(tmp_path, call, names):
    with pytest.raises(data.DataMissingError) as err:
        call(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "To obtain it" in msg and data.DATA_ENV in msg
    for name in names:
        assert name in msg
    assert isinstance(err.value, FileNotFoundError)
    assert str(pickle.loads(pickle.dumps(err.value))) == msg


def test_cifar_missing_error_says_where_to_get_it(tmp_path):
    with pytest.raises(data.DataMissingError, match="cifar-100-python.tar.gz"):
        data.cifar("cifar100", "test", tmp_path)


def test_bad_names_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        data.get_dataset("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        data.cifar("cifar10", "valid", tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.classification_transform("mnist")
    with pytest.raises(ValueError, match="kind must be one of"):
        data.generative_transform("cifar10", kind="jitter")


# ---------------------------------------------------------------- CIFAR / SVHN / shards


def write_shards(root: Path, prefix: str, sizes: list[int], **extra) -> np.ndarray:
    xs = []
    for k, size in enumerate(sizes):
        x = fake_images(size)
        y = (sum(map(len, xs)) + np.arange(size, dtype=np.int64)) % 10  # global index % 10
        np.savez(root / f"{prefix}_{k:02d}.npz", x=x, y=y, **extra)
        xs.append(x)
    return np.concatenate(xs)


def test_cifar_from_npz_shards(tmp_path):
    x = write_shards(tmp_path, "cifar10_train", [6, 4])
    np.savez(tmp_path / "cifar10_train_lossless_first4000.npz", x=fake_images(3), y=np.zeros(3))
    np.savez(tmp_path / "cifar100_train_00.npz", x=fake_images(5), y=np.zeros(5))
    ds = data.get_dataset("cifar10", "train", tmp_path)
    assert len(ds) == 10 and ds.x.dtype == np.uint8
    img, label = ds[7]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32)
    assert torch.allclose(img, as_tensor(x[7])) and label == 7 % 10
    assert len(data.cifar("cifar10", "train", tmp_path, n=3)) == 3
    again = data.cifar("cifar10", "train", tmp_path)  # cached in the process, read-only
    assert np.shares_memory(again.x, ds.x) and not again.x.flags.writeable
    with pytest.raises(ValueError):
        data.cifar("cifar10", "train", tmp_path, n=11)


def write_cifar_folder(root: Path, name: str, n_per_file: int = 4) -> tuple[np.ndarray, list]:
    """A torchvision-format CIFAR folder: pickled dicts, 'data' (N, 3072) in CHW order."""
    if name == "cifar10":
        folder, files = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]
        label_key, meta = "labels", ("batches.meta", {"label_names": list(data.CIFAR10_CLASSES)})
        files.append("test_batch")
    else:
        folder, files, label_key = root / "cifar-100-python", ["train", "test"], "fine_labels"
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    folder.mkdir()
    images, labels = [], []
    for f in files:
        x = fake_images(n_per_file)
        y = list(rng.integers(0, 10, n_per_file))
        flat = x.transpose(0, 3, 1, 2).reshape(n_per_file, 3072)
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": flat, label_key: [int(v) for v in y]}, fh)
        images.append(x)
        labels += y
    with open(folder / meta[0], "wb") as fh:
        pickle.dump(meta[1], fh)
    return np.concatenate(images), labels


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_torchvision_folder(tmp_path, monkeypatch, name):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # fake md5s
    images, labels = write_cifar_folder(tmp_path, name)
    train = data.cifar(name, "train", tmp_path)
    test = data.get_dataset(name, "test", tmp_path, n=2)
    n_train = len(images) - 4
    assert len(train) == n_train and len(test) == 2
    img, label = train[3]
    assert torch.allclose(img, as_tensor(images[3])) and label == labels[3]
    img, label = test[1]
    assert torch.allclose(img, as_tensor(images[n_train + 1])) and label == labels[n_train + 1]


def test_cifar_rejected_folder_is_data_missing(tmp_path):
    write_cifar_folder(tmp_path, "cifar10")  # md5 check of torchvision fails on fake files
    with pytest.raises(data.DataMissingError, match="rejected"):
        data.cifar("cifar10", "train", tmp_path)


def test_svhn_mat(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *a, **k: True)
    x = fake_images(5)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y})
    ds = data.get_dataset("svhn", "test", tmp_path)
    assert len(ds) == 5
    assert [ds[i][1] for i in range(5)] == [0, 1, 2, 0, 9]
    assert torch.allclose(ds[3][0], as_tensor(x[3]))


def test_tinyimagenet32_shards(tmp_path):
    wnids = np.array([f"n{i:08d}" for i in range(200)])
    x = write_shards(tmp_path, "tinyimagenet32_val", [3, 3], wnids=wnids)
    ds = data.get_dataset("tinyimagenet32", "val", tmp_path, n=4)
    assert len(ds) == 4 and ds.classes[0] == "n00000000"
    assert torch.allclose(ds[3][0], as_tensor(x[3]))
    with pytest.raises(data.DataMissingError):
        data.tinyimagenet32("train", tmp_path)


# ---------------------------------------------------------------- 80M Tiny Images


def test_tiny_images_fortran_records_and_exclusions(tmp_path):
    x = fake_images(10)  # (N, H, W, C)
    with open(tmp_path / "tiny_images.bin", "wb") as fh:
        for img in x:
            fh.write(img.flatten(order="F").tobytes())
    ds = data.tiny_images(tmp_path)
    assert len(ds) == 10
    for i in (0, 4, 9):
        img, label = ds[i]
        assert torch.equal(img, as_tensor(x[i])) and label == 0

    (tmp_path / "80mn_cifar_idxs.txt").write_text("3\n5\n10\n")  # 1-based: records 2, 4, 9
    np.save(tmp_path / "extra.npy", np.array([0]))  # 0-based via (path, base)
    ds = data.get_dataset(
        "tiny_images",
        root=tmp_path,
        exclude_files=[tmp_path / "80mn_cifar_idxs.txt", (tmp_path / "extra.npy", 0)],
    )
    kept = [1, 3, 5, 6, 7, 8]
    assert len(ds) == len(kept) and [ds.record(i) for i in range(len(ds))] == kept
    for i, r in enumerate(kept):
        assert torch.equal(ds[i][0], as_tensor(x[r]))
    with pytest.raises(IndexError):
        ds[len(kept)]
    assert pickle.loads(pickle.dumps(ds))._memmap is None  # workers reopen the file
    assert len(data.tiny_images(tmp_path, n=4)) == 4
    (tmp_path / "bad.txt").write_text("11\n")
    with pytest.raises(ValueError, match="out of range"):
        data.tiny_images(tmp_path, exclude_files=[tmp_path / "bad.txt"])


# ---------------------------------------------------------------- ImageNet folders


IN_RIN = {151: 0, 268: 0, 281: 1, 30: 2, 37: 3, 319: 8}  # ImageNet class -> RIN label
OUTSIDE = [0, 150, 269, 999]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in")
    val = root / "imagenet" / "val"
    for c in range(1000):
        (val / f"n{c:08d}").mkdir(parents=True)
    for c in [*IN_RIN, *OUTSIDE]:
        copies = 3 if c == 151 else 1  # dog is over-represented
        for k in range(copies):
            img = Image.fromarray(fake_images(1, 12)[0])
            img.save(val / f"n{c:08d}" / f"img_{k}.JPEG")
    return root


def test_restricted_imagenet_labels_and_balance(imagenet_root):
    ds = data.restricted_imagenet("val", imagenet_root, balance=True)
    assert len(ds) == 8 and ds.classes[8] == "insect"
    by_class = {int(Path(p).parent.name[1:]): label for p, label in ds.samples}
    assert by_class == IN_RIN
    counts = torch.bincount(torch.tensor(ds.targets))
    assert torch.allclose(ds.sample_weights, 1.0 / counts[torch.tensor(ds.targets)].double())
    assert ds.sample_weights.sum().item() == pytest.approx(len(IN_RIN) - 1)  # 7 classes
    img, label = ds[0]
    assert img.shape == (3, 12, 12) and 0 <= img.min() and img.max() <= 1
    assert data.rin_label(30) == 2 and data.rin_label(29) is None


def test_imagenet_od_is_the_complement(imagenet_root):
    od = data.get_dataset("imagenet_od", "val", imagenet_root)
    rin = data.get_dataset("rin", "val", imagenet_root)
    assert {int(Path(p).parent.name[1:]) for p, _ in od.samples} == set(OUTSIDE)
    assert set(od.targets) == {0}
    assert not {p for p, _ in od.samples} & {p for p, _ in rin.samples}
    assert len(data.imagenet_od("val", imagenet_root, n=2)) == 2


def test_imagenet_needs_1000_class_folders(tmp_path):
    for c in range(999):
        (tmp_path / "imagenet" / "train" / f"n{c:08d}").mkdir(parents=True)
    with pytest.raises(data.DataMissingError, match="999 class folders"):
        data.restricted_imagenet("train", tmp_path)


def test_image_folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(fake_images(1, 8)[0]).save(tmp_path / cls / "x.png")
    ds = data.get_dataset("folder", root=tmp_path)
    assert len(ds) == 2 and ds[1][1] == 1 and ds[0][0].shape == (3, 8, 8)
    assert len(data.image_folder(tmp_path, n=1)) == 1


def test_uniform_noise_is_deterministic_per_index():
    ds = data.get_dataset("noise", n=4)
    x0, y0 = ds[2]
    assert x0.shape == (3, 32, 32) and x0.dtype == torch.float32 and y0 == 0
    assert 0 <= x0.min() and x0.max() <= 1 and x0.std() > 0.2
    assert torch.equal(x0, data.uniform_noise(4)[2][0])
    assert not torch.equal(x0, ds[1][0])
    assert not torch.equal(x0, data.uniform_noise(4, seed=1)[2][0])
    assert data.uniform_noise(1, size=224)[0][0].shape == (3, 224, 224)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_transforms_shapes(dataset):
    img = Image.fromarray(fake_images(1)[0])
    pipelines = [data.classification_transform(dataset), data.test_transform(dataset)]
    pipelines += [data.generative_transform(dataset, k) for k in data.GENERATIVE_KINDS]
    pipelines.append(data.classification_transform(dataset, fill=data.RATIO_CIFAR_FILL))
    for t in pipelines:
        x = t(img)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
    big = Image.fromarray(fake_images(1, 64)[0])
    assert data.test_transform(dataset, resize=True)(big).shape == (3, 32, 32)


def test_rin_transforms_shapes():
    img = Image.fromarray(rng.integers(0, 256, (260, 300, 3), dtype=np.uint8))
    pipelines = [data.classification_transform("rin"), data.test_transform("rin")]
    pipelines += [data.generative_transform("rin", k) for k in data.GENERATIVE_KINDS]
    for t in pipelines:
        x = t(img)
        assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1


def test_cutout_zeros_one_clipped_square():
    torch.manual_seed(0)
    for _ in range(20):
        out = data.Cutout(16)(torch.ones(3, 32, 32))
        zero = out[0] == 0
        rows, cols = zero.any(1).sum().item(), zero.any(0).sum().item()
        assert 8 <= rows <= 16 and 8 <= cols <= 16 and zero.sum() == rows * cols
        assert torch.equal(out[0], out[2])


def test_lighting_adds_one_colour_and_clamps():
    torch.manual_seed(0)
    x = torch.full((3, 4, 4), 0.5)
    out = data.Lighting(0.05)(x)
    shift = out - x
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift)) and shift.abs().max() > 0
    assert data.Lighting(10.0)(x).min() >= 0 and data.Lighting(10.0)(x).max() <= 1
    assert (data.Lighting(10.0, clamp=False)(x) - x).abs().max() > 0.5


# ---------------------------------------------------------------- loaders and streams


def indexed_set(n: int, transform=None) -> data.ArrayImages:
    """Images whose label is their index, so batches reveal the order."""
    return data.ArrayImages(fake_images(n), np.arange(n), transform)


def epochs(loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for _ in range(count) for batch in loader]


def same(a, b) -> bool:
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_make_loader_is_deterministic_for_a_seed():
    ds = indexed_set(20, data.generative_transform("cifar10"))
    a = epochs(data.make_loader(ds, 8, shuffle=True, seed=3), 2)
    b = epochs(data.make_loader(ds, 8, shuffle=True, seed=3), 2)
    c = epochs(data.make_loader(ds, 8, shuffle=True, seed=4), 2)
    assert len(a) == 6 and same(a, b) and not same(a, c)
    x, y = a[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    assert sorted(torch.cat([y for _, y in a[:3]]).tolist()) == list(range(20))
    assert not torch.equal(a[0][1], a[3][1])  # a new order each epoch
    torch.manual_seed(123)  # global RNG state does not matter
    d = epochs(data.make_loader(ds, 8, shuffle=True, seed=3), 2)
    assert same(a, d)
    resumed = data.make_loader(ds, 8, shuffle=True, seed=3)
    resumed.batch_sampler.epoch, resumed.batch_sampler.skip = 1, 1  # resume at epoch 1, batch 1
    assert same(list(resumed), a[4:]) and len(list(resumed)) == 3  # then a whole epoch 2
    ordered = next(iter(data.make_loader(ds, 8, shuffle=False, seed=0, drop_last=True)))
    assert ordered[1].tolist() == list(range(8))


def test_make_loader_same_batches_with_workers():
    ds = indexed_set(12, data.classification_transform("cifar10"))
    a = epochs(data.make_loader(ds, 4, shuffle=True, seed=0), 1)
    b = epochs(data.make_loader(ds, 4, shuffle=True, seed=0, workers=2), 1)
    assert same(a, b)


def test_weighted_loader_follows_weights():
    ds = indexed_set(10)
    weights = torch.zeros(10)
    weights[[2, 7]] = 1.0
    loader = data.make_loader(ds, 5, shuffle=True, seed=0, sampler_weights=weights)
    labels = torch.cat([y for _, y in epochs(loader, 3)])
    assert len(labels) == 30 and set(labels.tolist()) == {2, 7}


def test_infinite_runs_over_epochs():
    loader = data.make_loader(indexed_set(6), 4, shuffle=True, seed=0)
    batches = data.infinite(loader)
    sizes = [len(next(batches)[1]) for _ in range(5)]
    assert sizes == [4, 2, 4, 2, 4]


STREAM_X, OOD_X = fake_images(40), fake_images(24)


def make_streams(seed: int = 0) -> data.Stage2Streams:
    cls = data.ArrayImages(STREAM_X, np.arange(40), data.classification_transform("cifar10"))
    gen = data.ArrayImages(STREAM_X, np.arange(40), data.generative_transform("cifar10"))
    ood = data.ArrayImages(OOD_X, np.arange(24), data.generative_transform("cifar10"))
    return data.stage2_streams(cls, gen, ood, batch_size=16, seed=seed)


def test_stage2_streams_are_independent():
    batch = next(make_streams())
    assert batch.x.shape == batch.x_hat.shape == batch.x0.shape == (16, 3, 32, 32)
    assert batch.y.shape == batch.y_hat.shape == (16,)
    assert not torch.equal(batch.y, batch.y_hat)  # different orders of the same data
    for x in (batch.x, batch.x_hat, batch.x0):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    other = next(make_streams(seed=1))
    assert not torch.equal(batch.y, other.y) and not torch.equal(batch.x0, other.x0)


def test_stage2_streams_resume_exactly():
    streams = make_streams()
    batches, state = [], None
    for step in range(5):  # 2 batches per epoch: crosses two epoch boundaries
        batches.append(next(streams))
        if step == 1:
            state = pickle.loads(pickle.dumps(streams.state_dict()))  # as in a checkpoint
    resumed = make_streams()
    resumed.load_state_dict(state)
    for expected in batches[2:]:
        got = next(resumed)
        for a, b in zip(expected, got):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        make_streams(seed=5).load_state_dict(state)


# ---------------------------------------------------------------- real offline data


@pytest.mark.skipif(not (SHARED / "cifar10_test_00.npz").is_file(), reason="no offline data")
def test_real_cifar10_test_shard():
    ds = data.get_dataset("cifar10", "test", SHARED, n=100)
    x, y = next(iter(data.make_loader(ds, 100, shuffle=False, seed=0)))
    assert x.shape == (100, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) == 10
    assert 0.3 < x.mean() < 0.7
