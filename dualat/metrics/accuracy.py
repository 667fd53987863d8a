"""Clean and PGD accuracy. Models map images in [0, 1] (B, C, H, W) to logits (B, K)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.std import tqdm

from dualat.attacks import eval_mode
from dualat.progress import Lines, bar

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, x, y) -> x_adv


def batches(n: int, batch_size: int, progress: bool = False, desc: str = "") -> tqdm | Lines:
    """(start, stop) index pairs covering range(n) in steps of batch_size, with a progress bar
    (`dualat.progress.bar`: live when watched, a few lines when recorded)."""
    return bar([(s, min(s + batch_size, n)) for s in range(0, n, batch_size)], desc=desc, enabled=progress)


def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu", progress: bool = False
) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU for images x (N, C, H, W) in [0, 1], in eval mode.

    Batches are moved to `device`; the model must already live there.
    """
    out = []
    with eval_mode(model), torch.no_grad():
        for start, stop in batches(len(x), batch_size, progress, "logits"):
            out.append(model(x[start:stop].to(device)).float().cpu())
    return torch.cat(out)


def clean_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> float:
    """Fraction of x (N, C, H, W) in [0, 1] classified as y (N,)."""
    logits = predict_logits(model, x, batch_size, device, progress)
    return (logits.argmax(1) == y.cpu()).float().mean().item()


def pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> float:
    """Fraction of x (N, C, H, W) in [0, 1] still classified as y (N,) after `attack(model, x, y)`.

    `attack` is supplied by the caller (e.g. `functools.partial(dualat.attacks.pgd_ce, cfg=...)`);
    it runs on batches already on `device`. The adversarial predictions use eval mode.
    """
    correct = 0
    for start, stop in batches(len(x), batch_size, progress, "pgd"):
        xb, yb = x[start:stop].to(device), y[start:stop].to(device)
        x_adv = attack(model, xb, yb)
        if x_adv.shape != xb.shape:
            raise ValueError(f"attack returned shape {tuple(x_adv.shape)} for input {tuple(xb.shape)}")
        with eval_mode(model), torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum().item()
    return correct / len(x)
