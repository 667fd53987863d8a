"""Test-time generation (A.2): class-balanced conditional samples (Eq. 14) and unconditional
samples (Eq. 8) from OOD seed images, and their FID.

Seed images are drawn at random over the whole OOD source (not its first items, which in file
order cover a few Tiny-Images keywords). `seed_split` first holds out a selection block (training-
time FID and Table 8's grid, drawn with `sample.selection_seed`); each reporting seed of
`sample.seeds` then draws its `n_samples` images from the rest, so selection and reporting never
share a seed image.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dualat.progress import bar
from dualat.sampling import sample_conditional, sample_unconditional


def seed_images(dataset: Dataset, n: int, offset: int = 0) -> torch.Tensor:
    """The OOD seeds: items offset .. offset+n-1 of `dataset` in order, (n, C, H, W) in [0, 1]."""
    if offset + n > len(dataset):
        raise ValueError(f"asked for {n} seed images from offset {offset}, the OOD source has {len(dataset)}")
    return torch.stack([dataset[i][0] for i in range(offset, offset + n)])


def selection_size(cfg) -> int:
    """Seed images held out for selection: max(stage2.eval_fid_samples, sample.n_grid_samples)."""
    return max(cfg.stage2.eval_fid_samples, cfg.sample.n_grid_samples)


def seed_split(n_source: int, n_selection: int, selection_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection, pool): a seeded permutation of range(n_source) cut after n_selection items.

    `selection` (n_selection,) seeds training-time FID and the grid over T; `pool` the rest, from
    which the reported samples are drawn (`report_indices`). Both int64, disjoint."""
    if n_selection >= n_source:
        raise ValueError(
            f"the OOD source has {n_source} images, {n_selection} are held out for selection "
            "(max(stage2.eval_fid_samples, sample.n_grid_samples)): none left for the reported samples"
        )
    perm = np.random.default_rng(selection_seed).permutation(n_source)
    return perm[:n_selection], perm[n_selection:]


def report_indices(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices (n,) drawn without replacement from `pool` by a generator seeded with `seed`; seed
    image i gets label i mod K (`balanced_labels`), so `seed` fixes the label order too."""
    if n > len(pool):
        raise ValueError(f"asked for {n} seed images, the OOD source has {len(pool)} outside the selection block")
    return np.random.default_rng(seed).permutation(pool)[:n]


def indices_sha256(indices: np.ndarray) -> str:
    """sha256 of the indices as little-endian int64: records which seed images were used."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def images_at(dataset: Dataset, indices) -> torch.Tensor:
    """Items `indices` of `dataset`, (n, C, H, W) in [0, 1]."""
    return torch.stack([dataset[int(i)][0] for i in indices])


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """Seed i gets label i mod K (A.2: an equal number of samples per class)."""
    return torch.arange(n) % num_classes


def generate(
    model: nn.Module,
    seeds: torch.Tensor,
    T: int,
    eta: float,
    labels: torch.Tensor | None = None,
    batch_size: int = 250,
    progress: bool = False,
) -> torch.Tensor:
    """Samples from seeds (N, C, H, W): conditional on `labels` (N,) (Eq. 14), or unconditional
    (Eq. 8) when labels is None. Runs on the model's device; returns CPU tensors in [0, 1]."""
    device = next(model.parameters()).device
    out = []
    for i in bar(range(0, len(seeds), batch_size), desc="sampling", enabled=progress):
        x0 = seeds[i : i + batch_size].to(device)
        if labels is None:
            x = sample_unconditional(model, x0, T, eta)
        else:
            x = sample_conditional(model, x0, labels[i : i + batch_size].to(device), T, eta)
        out.append(x.cpu())
    return torch.cat(out)
