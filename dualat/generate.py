"""Test-time generation (A.2): class-balanced conditional samples (Eq. 14) and unconditional
samples (Eq. 8) from OOD seeds taken in a fixed order, and their FID."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from dualat.sampling import sample_conditional, sample_unconditional


def seed_images(dataset: Dataset, n: int, offset: int = 0) -> torch.Tensor:
    """The OOD seeds: items offset .. offset+n-1 of `dataset` in order, (n, C, H, W) in [0, 1]."""
    if offset + n > len(dataset):
        raise ValueError(f"asked for {n} seed images from offset {offset}, the OOD source has {len(dataset)}")
    return torch.stack([dataset[i][0] for i in range(offset, offset + n)])


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
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out = []
    for i in tqdm(range(0, len(seeds), batch_size), desc="sampling", disable=not progress):
        x0 = seeds[i : i + batch_size].to(device)
        if labels is None:
            x = sample_unconditional(model, x0, T, eta)
        else:
            x = sample_conditional(model, x0, labels[i : i + batch_size].to(device), T, eta)
        out.append(x.cpu())
    return torch.cat(out)
