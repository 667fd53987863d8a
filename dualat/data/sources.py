"""Image datasets of the paper: CIFAR-10/100, SVHN, 80M Tiny Images, Tiny-ImageNet 32x32,
RestrictedImageNet, ImageNetOD, uniform noise and any image folder.

Every dataset returns `(image, label)` with an int label. With `transform=None` the image is a
float tensor (3, H, W) in [0, 1]; otherwise the transform receives an RGB PIL image. `n > 0` keeps
the first n items (deterministic), `n = 0` keeps all. Every dataset has a `provenance` string
saying which files it was read from and whether they are lossless (`describe` gives the same
string without reading the data); records and reports carry it, since a JPEG copy shifts FID.

A missing source raises DataMissingError; data that is there but wrong (a damaged shard, labels
out of range, more images asked for than there are) raises DataError naming the file and the
remedy (shards.py, validate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dualat.data.paths import DataError, DataMissingError, data_root
from dualat.data.shards import cached_shards, find_shards, ignored_lookalikes
from dualat.data.validate import NUM_CLASSES, TooFewImages, check_arrays, check_labels
from dualat.data.validate import first_n as _first

Transform = Callable[[Any], Any]

SHARDS_NOTE = "JPEG q75 offline copy, lossy: see ../shared/datasets/README.md"
OFFLINE_HINT = (
    "the project's offline uint8 .npz copies (../shared/datasets/ from the project root, see its "
    "README.md) are such shards"
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# RestrictedImageNet super-classes as inclusive ImageNet class-index ranges (REFERENCE.md, "Model
# and energy"; Tsipras et al. 2019). The label is the position in this tuple: dog 0 ... insect 8.
RIN_CLASSES = ("dog", "cat", "frog", "turtle", "bird", "monkey", "fish", "crab", "insect")
RIN_RANGES = ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397), (118, 121), (300, 319))
DATASETS = ("cifar10", "cifar100", "svhn", "tiny_images", "tinyimagenet32", "rin", "imagenet_od", "noise", "folder")


def _check_choice(param: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{param} must be one of {tuple(allowed)}, got {value!r}")


def _to_sample(img: np.ndarray | Image.Image, transform: Transform | None) -> Any:
    """(H, W, 3) uint8 array or PIL image -> transform(PIL) or a float tensor (3, H, W) in [0, 1]."""
    if transform is not None:
        pil = img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
        return transform(pil.convert("RGB"))
    if isinstance(img, Image.Image):
        img = img.convert("RGB")
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W), a copy
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


class ArrayImages(Dataset):
    """In-memory images `x` (N, H, W, 3) uint8 with labels `y` (N,) int64; `source` names where
    they came from (in error messages), `provenance` describes them (default: `source`),
    `image_hw` is their (H, W)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
        source: str = "arrays",
        provenance: str = "",
    ) -> None:
        check_arrays(source, x, np.asarray(y))
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        self.transform = transform
        self.classes = None if classes is None else list(classes)
        self.source = source
        self.provenance = provenance or source

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.x.shape[1], self.x.shape[2]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return _to_sample(self.x[i], self.transform), int(self.y[i])


def _from_shards(name: str, split: str, files: list[Path], transform, n: int, classes=None) -> ArrayImages:
    """The first n images of the (checked, cached) shards `files` of dataset `name`."""
    x, y, extra = cached_shards(files, n, NUM_CLASSES[name], name)
    keep = _first(n, len(x), f"{name} {split}")
    if "wnids" in extra:
        classes = [str(w) for w in extra["wnids"]]
    return ArrayImages(x[:keep], y[:keep], transform, classes, source=str(files[0]), provenance=_shards_text(files))


def _shards_text(files: Sequence[Path]) -> str:
    """Provenance of offline shards: their name pattern, count and lossiness."""
    prefix = files[0].name[: -len("_00.npz")]
    return f"{prefix}_NN.npz ({len(files)} shards; {SHARDS_NOTE})"


# name -> (torchvision folder, torchvision class, archive URL)
_CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        "CIFAR10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        "CIFAR100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def cifar(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    transform: Transform | None = None,
    n: int = 0,
    download: bool = False,
) -> ArrayImages:
    """CIFAR-10/100 ("cifar10"/"cifar100"), split "train"/"test", images kept as one uint8 array.

    Sources in order: the torchvision folder (`cifar-10-batches-py/` or `cifar-100-python/`,
    lossless) under root, or a torchvision download into root if `download`; else the offline
    shards `{name}_{split}_NN.npz` in root (JPEG q75, lossy; shards.py: other files are ignored,
    each shard is checked and verified against a SHA256SUMS beside it). `provenance` says which.
    """
    _check_choice("name", name, tuple(_CIFAR))
    _check_choice("split", split, ("train", "test"))
    root = data_root(root)
    pattern = f"{name}_{split}_NN.npz"
    classes = CIFAR10_CLASSES if name == "cifar10" else None
    folder, tv_class, url = _CIFAR[name]
    tried = [root / folder, root / pattern]
    how = (
        f"put `{folder}/` (extracted from {url}) under {root}, or run "
        f"torchvision.datasets.{tv_class}({str(root)!r}, download=True) on a machine with "
        f"internet (or call cifar(..., download=True))"
    )
    if not (root / folder).is_dir() and not download:
        files = find_shards(root, f"{name}_{split}")
        if files:
            return _from_shards(name, split, files, transform, n, classes)
        if name == "cifar10":
            how += f"; or use {name}_{split}_NN.npz shards (NN = 00, 01, ...): {OFFLINE_HINT}"
        raise DataMissingError(name, tried, how + ignored_lookalikes(root, f"{name}_{split}"))
    import torchvision.datasets as tvd

    try:
        tv = getattr(tvd, tv_class)(str(root), train=split == "train", download=download)
    except RuntimeError as err:  # torchvision's integrity check failed
        also = f"; or remove it to use the {pattern} shards" if find_shards(root, f"{name}_{split}") else ""
        raise DataMissingError(name, tried, f"{root / folder} was rejected ({err}); {how}{also}") from err
    targets = np.asarray(tv.targets)
    check_arrays(root / folder, tv.data, targets)
    check_labels(root / folder, targets, NUM_CLASSES[name], name)
    keep = _first(n, len(tv.data), f"{name} {split}")
    return ArrayImages(
        tv.data[:keep],
        targets[:keep],
        transform,
        tv.classes,
        source=str(root / folder),
        provenance=_lossless_text(folder),
    )


def _lossless_text(file: str) -> str:
    return f"{file} (lossless, torchvision format)"


def svhn(
    split: str = "test",
    root: str | Path | None = None,
    transform: Transform | None = None,
    n: int = 0,
    download: bool = False,
) -> ArrayImages:
    """SVHN (split "train"/"test"/"extra") from torchvision's `{split}_32x32.mat` in root; digit 0
    has label 0 (the .mat file's label 10)."""
    _check_choice("split", split, ("train", "test", "extra"))
    root = data_root(root)
    file = root / f"{split}_32x32.mat"
    how = (
        f"put {file.name} (from http://ufldl.stanford.edu/housenumbers/{file.name}) in {root}, or "
        f"run torchvision.datasets.SVHN({str(root)!r}, split={split!r}, download=True)"
    )
    if not file.is_file() and not download:
        raise DataMissingError("svhn", [file], how)
    import torchvision.datasets as tvd

    try:
        tv = tvd.SVHN(str(root), split=split, download=download)
    except RuntimeError as err:
        raise DataMissingError("svhn", [file], f"{file} was rejected ({err}); {how}") from err
    x = tv.data.transpose(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3), a view
    labels = np.asarray(tv.labels).ravel()
    check_arrays(file, x, labels)
    check_labels(file, labels, NUM_CLASSES["svhn"], "svhn")
    keep = _first(n, len(x), f"svhn {split}")
    digits = [str(d) for d in range(10)]
    return ArrayImages(
        x[:keep], labels[:keep], transform, digits, source=str(file), provenance=_lossless_text(file.name)
    )


class TinyImages(Dataset):
    """80M Tiny Images read lazily from `tiny_images.bin`: records of 3072 bytes, each a 32x32x3
    image in Fortran order. Position i maps to the i-th record not excluded. Label 0."""

    RECORD = 32 * 32 * 3
    image_hw = (32, 32)

    def __init__(
        self, path: Path, excluded: np.ndarray, n: int, transform: Transform | None, provenance: str = ""
    ) -> None:
        self.path, self.transform, self.source = path, transform, str(path)
        self.provenance = provenance or _tiny_text(())
        size = path.stat().st_size
        if size % self.RECORD:
            raise DataError(
                f"{path}: size {size} is not a multiple of {self.RECORD} bytes (one 32x32x3 record); the file is "
                f"truncated or not 80M Tiny Images: replace it with a complete copy"
            )
        self.num_records = size // self.RECORD
        excluded = np.unique(np.asarray(excluded, dtype=np.int64))
        if len(excluded) and (excluded[0] < 0 or excluded[-1] >= self.num_records):
            raise ValueError(
                f"exclusion index out of range [0, {self.num_records}) after index_base: "
                f"{excluded[0]}..{excluded[-1]} (is index_base right?)"
            )
        # With excluded records e_0 < e_1 < ..., position i is record i + #{k : e_k - k <= i}.
        self._shift = excluded - np.arange(len(excluded))
        self.length = _first(n, self.num_records - len(excluded), "tiny_images")
        self._memmap: np.ndarray | None = None  # opened on first access, in each worker

    def __len__(self) -> int:
        return self.length

    def record(self, i: int) -> int:
        """Record number in tiny_images.bin (0-based) of position i."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} images")
        return i + int(np.searchsorted(self._shift, i, side="right"))

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self._memmap is None:
            self._memmap = np.memmap(self.path, np.uint8, "r", shape=(self.num_records, self.RECORD))
        img = self._memmap[self.record(i)].reshape(32, 32, 3, order="F")  # (H, W, 3)
        return _to_sample(img, self.transform), 0

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the memmap (for workers): it would copy the whole file.
        return {**self.__dict__, "_memmap": None}


def _read_indices(path: Path) -> np.ndarray:
    """Record indices of an exclusion list: .npy integers or text, one integer per line."""
    try:
        if path.suffix == ".npy":
            indices = np.load(path, allow_pickle=False)
            if indices.dtype.kind not in "iu":
                raise ValueError(f"dtype {indices.dtype}, expected integers")
            return indices.astype(np.int64).ravel()
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except Exception as err:  # unreadable, truncated or not integers
        raise DataError(
            f"{path} is not a list of record indices ({type(err).__name__}: {err}); give a .npy of integers "
            f"or a text file of one integer per line"
        ) from err


def tiny_images(
    root: str | Path | None = None,
    exclude_files: Sequence[str | Path | tuple[str | Path, int]] = (),
    index_base: int = 1,
    n: int = 0,
    transform: Transform | None = None,
) -> TinyImages:
    """80M Tiny Images from `<root>/tiny_images.bin`, without reading the file.

    `exclude_files` are text (one integer per line) or .npy index files of records to skip; their
    indices start at `index_base` (1 for the published CIFAR near-duplicate list
    `80mn_cifar_idxs.txt`). An entry `(path, base)` overrides the base for that file.
    """
    root = data_root(root)
    path = root / "tiny_images.bin"
    if not path.is_file():
        raise DataMissingError(
            "tiny_images (80M Tiny Images)",
            [path],
            f"put tiny_images.bin (79,302,017 records, 227 GB; the dataset was withdrawn by its "
            f"authors, so only existing copies remain) in {root}; for a stand-in p_ood use "
            f"tinyimagenet32 ({OFFLINE_HINT})",
        )
    excluded = []
    for entry in exclude_files:
        file, base = entry if isinstance(entry, tuple) else (entry, index_base)
        if not Path(file).is_file():
            raise DataMissingError(
                "tiny_images exclusion list",
                [file],
                "give the path of an existing index file",
            )
        excluded.append(_read_indices(Path(file)) - base)
    excluded_all = np.concatenate(excluded) if excluded else np.zeros(0, np.int64)
    return TinyImages(path, excluded_all, n, transform, _tiny_text(exclude_files))


def _tiny_text(exclude_files: Sequence) -> str:
    names = [Path(e[0] if isinstance(e, tuple) else e).name for e in exclude_files]
    without = f"without the records listed in {', '.join(names)}" if names else "no exclusion list"
    return f"tiny_images.bin (80M Tiny Images, {without})"


def tinyimagenet32(
    split: str = "train",
    root: str | Path | None = None,
    transform: Transform | None = None,
    n: int = 0,
) -> ArrayImages:
    """Tiny-ImageNet-200 at 32x32 from offline shards (train: 50% subset); `classes` = wnids."""
    _check_choice("split", split, ("train", "val"))
    root = data_root(root)
    prefix = f"tinyimagenet32_{'train50pc' if split == 'train' else 'val'}"
    files = find_shards(root, prefix)
    if not files:
        raise DataMissingError(
            "tinyimagenet32",
            [root / f"{prefix}_NN.npz"],
            f"put the {prefix}_NN.npz shards (NN = 00, 01, ...) in {root}; {OFFLINE_HINT}"
            + ignored_lookalikes(root, prefix),
        )
    return _from_shards("tinyimagenet32", split, files, transform, n)


class FileImages(Dataset):
    """Images read from files: `samples` is a list of (path, label)."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Transform | None = None,
        classes: Sequence[str] = (),
        provenance: str = "image files",
    ) -> None:
        self.samples, self.transform, self.classes = samples, transform, list(classes)
        self.provenance = provenance
        self.targets = [label for _, label in samples]
        self.sample_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[i]
        return _to_sample(default_loader(path), self.transform), label


def rin_label(imagenet_class: int) -> int | None:
    """RestrictedImageNet super-class (0..8) of an ImageNet class index, None if outside."""
    for label, (lo, hi) in enumerate(RIN_RANGES):
        if lo <= imagenet_class <= hi:
            return label
    return None


def _imagenet_samples(
    split: str,
    root: str | Path | None,
    label_of: Callable[[int], int | None],
    what: str,
) -> list[tuple[str, int]]:
    """(path, label_of(imagenet index)) for the images of <root>/imagenet/<split> whose label is
    not None, in ImageFolder order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    _check_choice("split", split, ("train", "val"))
    folder = data_root(root) / "imagenet" / split
    how = (
        f"put ILSVRC2012 {split} images at {folder}/<wnid>/*.JPEG, one folder per wnid "
        f"(https://image-net.org/download; torchvision.datasets.ImageNet({str(folder.parent)!r}, "
        f"split={split!r}) builds this layout from ILSVRC2012_img_{split}.tar and "
        f"ILSVRC2012_devkit_t12.tar.gz placed in {folder.parent})"
    )
    if not folder.is_dir():
        raise DataMissingError(what, [folder], how)
    classes, class_to_idx = find_classes(folder)
    if len(classes) != 1000:
        raise DataMissingError(
            what,
            [folder],
            f"{folder} holds {len(classes)} class folders, ImageNet needs exactly 1000 (the class "
            f"index is the position of the wnid in sorted order); {how}",
        )
    wanted = {w: i for w, i in class_to_idx.items() if label_of(i) is not None}
    found = make_dataset(folder, wanted, extensions=IMG_EXTENSIONS, allow_empty=True)
    return [(path, label_of(i)) for path, i in found]


def restricted_imagenet(
    split: str = "train",
    root: str | Path | None = None,
    transform: Transform | None = None,
    balance: bool = False,
    n: int = 0,
) -> FileImages:
    """RestrictedImageNet: the images of the 9 super-classes (RIN_RANGES), labels 0..8.

    Reads `<root>/imagenet/{train,val}/<wnid>/` (ImageFolder layout, 1000 wnid folders). With
    `balance`, `sample_weights` (N,) float64 is the inverse super-class frequency, for a
    WeightedRandomSampler or make_loader(sampler_weights=...). n > 0 keeps the first n in folder
    (hence class) order.
    """
    samples = _imagenet_samples(split, root, rin_label, "RestrictedImageNet (ImageNet)")
    ds = FileImages(samples[: _first(n, len(samples), f"rin {split}")], transform, RIN_CLASSES, _imagenet_text(split))
    if balance:
        labels = torch.tensor(ds.targets, dtype=torch.long)
        counts = torch.bincount(labels, minlength=len(RIN_CLASSES)).double()
        ds.sample_weights = 1.0 / counts[labels]
    return ds


def imagenet_od(
    split: str = "val",
    root: str | Path | None = None,
    transform: Transform | None = None,
    n: int = 0,
) -> FileImages:
    """ImageNetOD: all images of the ImageNet classes outside RestrictedImageNet, label 0."""
    samples = _imagenet_samples(
        split,
        root,
        lambda i: 0 if rin_label(i) is None else None,
        "ImageNetOD (ImageNet)",
    )
    keep = _first(n, len(samples), f"imagenet_od {split}")
    return FileImages(samples[:keep], transform, ["ood"], _imagenet_text(split))


def _imagenet_text(split: str) -> str:
    return f"imagenet/{split} (ILSVRC2012 class folders, JPEG as distributed)"


class UniformNoise(Dataset):
    """n images of i.i.d. uniform noise on the 256 uint8 levels of [0, 1], generated from
    seed + index (so item i never depends on which items were read before). Label 0."""

    def __init__(self, n: int, size: int = 32, seed: int = 0, transform: Transform | None = None):
        if n <= 0:
            raise ValueError(f"uniform_noise needs n > 0, got {n}")
        self.n, self.size, self.seed, self.transform = n, size, seed, transform
        self.image_hw, self.source = (size, size), "uniform noise"
        self.provenance = _noise_text(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        g = torch.Generator().manual_seed(self.seed + i)
        img = torch.randint(0, 256, (self.size, self.size, 3), dtype=torch.uint8, generator=g)
        return _to_sample(img.numpy(), self.transform), 0


def _noise_text(seed: int) -> str:
    return f"uniform noise (generated, seed {seed} + index)"


def uniform_noise(n: int, size: int = 32, seed: int = 0, transform: Transform | None = None) -> UniformNoise:
    """Uniform-noise OOD set: n images (3, size, size) in [0, 1], deterministic per index."""
    return UniformNoise(n, size, seed, transform)


def image_folder(root: str | Path | None, transform: Transform | None = None, n: int = 0):
    """torchvision ImageFolder of `root` (class sub-folders of images); images in [0, 1] as
    (3, H, W) float tensors when `transform` is None."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    folder = data_root(root)
    how = f"point root at a folder of class sub-folders holding images ({folder} has none)"
    try:
        ds = ImageFolder(str(folder), transform=transform or ToTensor())
    except FileNotFoundError as err:
        raise DataMissingError("image folder", [folder], f"{how}: {err}") from err
    keep = _first(n, len(ds), "folder")
    ds.samples = ds.imgs = ds.samples[:keep]
    ds.targets = ds.targets[:keep]
    ds.provenance = _folder_text(folder)
    return ds


def _folder_text(folder: Path) -> str:
    return f"{folder} (image folder)"


def describe(name: str, split: str = "train", root: str | Path | None = None, **kw: Any) -> str:
    """The `provenance` string of `get_dataset(name, split, root, **kw)`, without reading images
    ("not found: ..." when the source is missing, "invalid: ..." for misnumbered shards). Keywords
    as for get_dataset: exclude_files (tiny_images), seed (noise)."""
    try:
        return _describe(name, split, data_root(root), **kw)
    except DataError as err:
        return f"invalid: {err}"


def _describe(name: str, split: str, root: Path, **kw: Any) -> str:
    if name in _CIFAR:
        folder = _CIFAR[name][0]
        if (root / folder).is_dir():
            return _lossless_text(folder)
        files = find_shards(root, f"{name}_{split}")
        return _shards_text(files) if files else f"not found: neither {folder}/ nor {name}_{split}_NN.npz in {root}"
    if name == "tinyimagenet32":
        prefix = f"tinyimagenet32_{'train50pc' if split == 'train' else 'val'}"
        files = find_shards(root, prefix)
        return _shards_text(files) if files else f"not found: no {prefix}_NN.npz in {root}"
    present = {
        "svhn": lambda: (root / f"{split}_32x32.mat").is_file(),
        "tiny_images": lambda: (root / "tiny_images.bin").is_file(),
        "rin": lambda: (root / "imagenet" / split).is_dir(),
        "imagenet_od": lambda: (root / "imagenet" / split).is_dir(),
        "noise": lambda: True,
        "folder": lambda: root.is_dir(),
    }
    texts = {
        "svhn": lambda: _lossless_text(f"{split}_32x32.mat"),
        "tiny_images": lambda: _tiny_text(kw.get("exclude_files", ())),
        "rin": lambda: _imagenet_text(split),
        "imagenet_od": lambda: _imagenet_text(split),
        "noise": lambda: _noise_text(kw.get("seed", 0)),
        "folder": lambda: _folder_text(root),
    }
    if name not in texts:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    return texts[name]() if present[name]() else f"not found: {name} ({split}) under {root}"


def get_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    transform: Transform | None = None,
    n: int = 0,
    n_key: str = "n",
    **kw: Any,
) -> Dataset:
    """Dataset by name (one of DATASETS); `split` is ignored by tiny_images, noise and folder.

    `n_key` names `n` in the error when n exceeds the dataset (the config key, e.g. "data.n_train").
    Extra keywords go to the builder: download (cifar*, svhn), exclude_files/index_base
    (tiny_images), balance (rin), size/seed (noise).
    """
    try:
        return _build(name, split, root, transform, n, **kw)
    except TooFewImages as err:
        raise err.with_key(n_key) from None


def _build(name: str, split: str, root, transform, n: int, **kw: Any) -> Dataset:
    if name in _CIFAR:
        return cifar(name, split, root, transform, n, **kw)
    builders: dict[str, Callable[[], Dataset]] = {
        "svhn": lambda: svhn(split, root, transform, n, **kw),
        "tiny_images": lambda: tiny_images(root, n=n, transform=transform, **kw),
        "tinyimagenet32": lambda: tinyimagenet32(split, root, transform, n, **kw),
        "rin": lambda: restricted_imagenet(split, root, transform, n=n, **kw),
        "imagenet_od": lambda: imagenet_od(split, root, transform, n, **kw),
        "noise": lambda: uniform_noise(n, transform=transform, **kw),
        "folder": lambda: image_folder(root, transform, n, **kw),
    }
    if name not in builders:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    return builders[name]()
