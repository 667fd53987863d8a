"""The OOD test sets of Tables 10-12 (A.4) and the seeded draw of their images."""

from __future__ import annotations

import numpy as np
import torch

from dualat import datasets
from dualat.config import Config
from dualat.data import get_dataset, test_transform
from dualat.generate import indices_sha256

# Evaluation split of each OOD set (A.4); "tinyimagenet32" is the offline ImageNetOD stand-in.
OOD_SPLITS = {
    "cifar10": "test",
    "cifar100": "test",
    "svhn": "test",
    "tinyimagenet32": "val",
    "imagenet_od": "val",
    "noise": "",
}
OOD_NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "tinyimagenet32": 32}  # others vary


def ood_images(cfg: Config, name: str) -> tuple[torch.Tensor, dict]:
    """`evaluate.ood_n` images (N, C, H, W) in [0, 1] of OOD set `name` (all of them if it holds
    fewer), drawn uniformly without replacement over the whole set (`draw_indices` with
    `evaluate.seed`; file order would give a few classes, e.g. ImageNet's first ones), at the ID
    image size, and the draw: {seed, set_size, indices_sha256, provenance}. Only the drawn items
    are decoded. Raises DataMissingError when the set's files are absent."""
    if name not in OOD_SPLITS:
        raise ValueError(f"evaluate.ood_sets: unknown set {name!r} (known: {', '.join(OOD_SPLITS)})")
    settings, size, dataset = cfg.evaluate, cfg.data.image_size, cfg.data.dataset
    if name == "noise":  # drawn at the ID size directly: resizing would smooth the noise
        ds = get_dataset("noise", n=settings.ood_n, size=size, seed=settings.seed)
    else:
        same_size = OOD_NATIVE_SIZE.get(name) == size
        transform = test_transform(dataset) if same_size else test_transform(dataset, resize=True)
        ds = get_dataset(name, OOD_SPLITS[name], datasets.roots(cfg), transform)  # image files stay unread
    indices = draw_indices(len(ds), settings.ood_n, settings.seed)
    x = torch.stack([ds[int(i)][0] for i in indices])
    digest = indices_sha256(indices)
    return x, {"seed": settings.seed, "set_size": len(ds), "indices_sha256": digest, "provenance": ds.provenance}


def draw_indices(set_size: int, n: int, seed: int) -> np.ndarray:
    """min(n, set_size) distinct indices (sorted, int64) drawn uniformly from range(set_size)."""
    n = min(n, set_size)
    return np.sort(np.random.default_rng(seed).choice(set_size, n, replace=False)).astype(np.int64)
