"""Helpers of notebooks/explore.ipynb: draw samples, make counterfactuals, look at scores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn
from torchvision.utils import make_grid

from dualat import datasets
from dualat.attacks import pgd_target
from dualat.config import Config
from dualat.data import test_transform
from dualat.energy import marginal_energy
from dualat.evaluation.counterfactuals import counterfactual_attack
from dualat.generate import balanced_labels, generate, seed_images
from dualat.metrics import predict_logits


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def conditional_samples(model: nn.Module, cfg: Config, n: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(seeds, samples): n OOD seeds in fixed order and their class-conditional samples (Eq. 14),
    seed i with label i mod K."""
    seeds = seed_images(datasets.ood_set(cfg, test_transform(cfg.data.dataset)), n)
    return seeds, generate(model, seeds, T, cfg.sample.step_size, balanced_labels(n, cfg.data.num_classes))


def unconditional_samples(model: nn.Module, cfg: Config, seeds: torch.Tensor, T: int) -> torch.Tensor:
    """Samples of the marginal energy (Eq. 8) from the given seeds."""
    return generate(model, seeds, T, cfg.sample.step_size)


def show_pairs(top: torch.Tensor, bottom: torch.Tensor, ncol: int = 10):
    """A figure with the images of `top` above those of `bottom`, ncol per row."""
    grid = make_grid(torch.cat([top[:ncol], bottom[:ncol]]), nrow=ncol, padding=1)
    fig, ax = plt.subplots(figsize=(ncol * 1.0, 2.4))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    return fig


def counterfactuals(model: nn.Module, x: torch.Tensor, eps: float, cfg: Config) -> torch.Tensor:
    """Counterfactuals of one image x (C, H, W) towards every class with the evaluation's
    counterfactual attack (`evaluation.counterfactuals.counterfactual_attack`): (K, C, H, W)."""
    device = _device(model)
    K = cfg.data.num_classes
    x_rep, t = x[None].repeat(K, 1, 1, 1).to(device), torch.arange(K, device=device)
    return pgd_target(model, x_rep, t, counterfactual_attack(eps, cfg.evaluate)).cpu()


def show_counterfactuals(model: nn.Module, cfg: Config, image_index: int, eps: float):
    """Test image `image_index` and its counterfactuals towards each class, with p(t|x')."""
    x, y = datasets.test_set(cfg, n=image_index + 1)[image_index]
    cf = counterfactuals(model, x, eps, cfg)
    with torch.no_grad():
        p = torch.softmax(model(cf.to(_device(model))), 1).diagonal().cpu()
    fig, axes = plt.subplots(1, len(cf) + 1, figsize=(1.3 * (len(cf) + 1), 1.8))
    for ax, img, title in zip(axes, [x, *cf], [f"x (y={y})"] + [f"t={t}\n{p[t]:.2f}" for t in range(len(cf))]):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()
    return fig


def score_table(model: nn.Module, sets: dict[str, torch.Tensor]):
    """Mean energy E(x), -E(x) and max_y p(y|x) of each image set (pandas DataFrame)."""
    rows = []
    for name, x in sets.items():
        logits = predict_logits(model, x, batch_size=250, device=_device(model))
        energy = marginal_energy(logits)
        rows.append(
            {
                "set": name,
                "n": len(x),
                "E(x) mean": energy.mean().item(),
                "max p(y|x) mean": torch.softmax(logits, 1).amax(1).mean().item(),
            }
        )
    return pd.DataFrame(rows)
