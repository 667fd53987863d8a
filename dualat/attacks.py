"""L2 PGD attacks: pure functions of (model, x, ...) -> x_adv, images in [0, 1].

Every attack runs the model in eval mode and restores the mode it found. Each public function
has one objective; they share `pgd_l2`, which maximises a per-sample objective of the logits
inside the L2 ball B(x, eps) ∩ [0, 1]^d.

Variants (`AttackConfig.variant`):
- "ratio": zero start, momentum on the L1-normalised gradient, v <- mu * v + g / ||g||_1 (per
  sample), step eta * v / ||v||_2, and the iterate with the highest objective is returned
  (RATIO's stage-1 attack as the released code runs it: REFERENCE.md, 'Measured against the
  released code'; the paper text does not describe the attack's inner rule).
- "plain": zero start, step eta * g / ||g||_2, last iterate (the released stage-2 attack).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from dualat.config import AttackConfig
from dualat.energy import joint_energy, marginal_energy

Objective = Callable[[torch.Tensor], torch.Tensor]  # logits (B, K) -> per-sample value (B,)


def l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of (B, ...) as (B, 1, 1, 1)-broadcastable, never zero."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def l1_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L1 norm of (B, ...) as (B, 1, 1, 1)-broadcastable, never zero."""
    return v.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each perturbation of (B, ...) onto the L2 ball of radius eps."""
    norm = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


def project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation delta moved into B(0, eps) and then into the image domain: x + delta in [0, 1]."""
    return (x + project_l2(delta, eps)).clamp(0, 1) - x


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode and restore each module's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def input_grad(model: nn.Module, x: torch.Tensor, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective per sample (B,), d sum(objective) / dx (B, C, H, W)) without touching param grads."""
    with torch.enable_grad():  # also inside a caller's no_grad block
        x = x.detach().requires_grad_(True)
        value = objective(model(x))
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def pgd_l2(model: nn.Module, x: torch.Tensor, objective: Objective, cfg: AttackConfig) -> torch.Tensor:
    """Maximise `objective(model(x'))` over x' in B(x, cfg.eps) ∩ [0,1]; x (B, C, H, W) in [0, 1],
    any floating dtype (the attack runs in the dtype of x and of the objective's values)."""
    x = x.detach()
    if cfg.steps == 0:
        return x.clone()
    with eval_mode(model):
        delta = torch.zeros_like(x)
        velocity = torch.zeros_like(x)
        best_x, best_value = x.clone(), None
        for _ in range(cfg.steps):
            value, grad = input_grad(model, x + delta, objective)
            if cfg.variant == "ratio":  # keep the best iterate seen so far
                if best_value is None:  # in the objective's dtype (float64, bf16, ...)
                    best_value = torch.full_like(value, -float("inf"))
                better = value > best_value
                best_x[better], best_value[better] = (x + delta)[better], value[better]
                velocity = cfg.momentum * velocity + grad / l1_norm(grad)  # released code: L1
                direction = velocity / l2_norm(velocity)
            else:
                direction = grad / l2_norm(grad)
            delta = project(x, delta + cfg.step_size * direction, cfg.eps)
        if cfg.variant != "ratio":
            return (x + delta).detach()
        with torch.no_grad():
            value = objective(model(x + delta))
        better = value > best_value
        best_x[better] = (x + delta)[better]
        return best_x.detach()


def ce_objective(y: torch.Tensor) -> Objective:
    """Cross-entropy of the true labels y (B,) (Eq. 10)."""
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


def pgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """Untargeted L2 PGD on the cross-entropy (Eq. 10): x_adv in B(x, eps) ∩ [0,1]."""
    return pgd_l2(model, x, ce_objective(y), cfg)


def pgd_target(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """Targeted L2 PGD maximising the logit f(x)[t] (counterfactuals towards class t)."""
    return pgd_l2(model, x, lambda logits: -joint_energy(logits, t), cfg)


def pgd_logsumexp(model: nn.Module, x: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """OOD attack on the energy score: maximise -E(x) = logsumexp f(x) (Eq. 15)."""
    return pgd_l2(model, x, lambda logits: -marginal_energy(logits), cfg)


def uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(logits) (B, K) to the uniform distribution 1/K, per sample."""
    return -F.log_softmax(logits, dim=1).mean(dim=1)


def pgd_uniform_ce(model: nn.Module, x: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """OOD attack on the confidence score: maximise CE(f(x), 1/K) (Eq. 13, 16)."""
    return pgd_l2(model, x, uniform_ce, cfg)
