"""Samplers of the energy model: normalised-gradient ascent from OOD seeds, no projection.

Conditional (ancestral, Eq. 14): x <- clamp(x + eta * g / ||g||_2, 0, 1), g = d f(x)[y] / dx.
Unconditional (Eq. 8): the same with g = d logsumexp f(x) / dx = -dE(x)/dx.
Kept apart from the attacks on purpose: no eps-ball, no best iterate, different objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dualat.attacks import eval_mode, input_grad, l2_norm, pgd_ce, project
from dualat.config import AttackConfig
from dualat.energy import joint_energy, marginal_energy


def ascent_step(x: torch.Tensor, grad: torch.Tensor, eta: float) -> torch.Tensor:
    """One step of Eq. 8/14: clamp(x + eta * grad / ||grad||_2, 0, 1), per sample."""
    return (x + eta * grad / l2_norm(grad)).clamp(0, 1)


def class_logit(y: torch.Tensor):
    """Objective f(x)[y] = -E(x, y) (Eq. 1) for labels y (B,)."""
    return lambda logits: -joint_energy(logits, y)


def neg_energy(logits: torch.Tensor) -> torch.Tensor:
    """-E(x) = logsumexp_y f(x)[y] (Eq. 4), per sample."""
    return -marginal_energy(logits)


def sample_conditional(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, T: int, eta: float) -> torch.Tensor:
    """x_T of T ascent steps on f(x)[y] from seeds x0 (B, C, H, W) in [0, 1] (Eq. 14)."""
    x = x0.detach()
    with eval_mode(model):
        for _ in range(T):
            _, grad = input_grad(model, x, class_logit(y))
            x = ascent_step(x, grad, eta)
    return x.detach()


def sample_unconditional(model: nn.Module, x0: torch.Tensor, T: int, eta: float) -> torch.Tensor:
    """x_T of T ascent steps on logsumexp f(x) from seeds x0 (B, C, H, W) in [0, 1] (Eq. 8)."""
    x = x0.detach()
    with eval_mode(model):
        for _ in range(T):
            _, grad = input_grad(model, x, neg_energy)
            x = ascent_step(x, grad, eta)
    return x.detach()


def attack_and_sample(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x0: torch.Tensor,
    y_prime: torch.Tensor,
    attack: AttackConfig,
    T: int,
    eta: float,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2's two inner loops: (x_adv of plain L2 PGD on CE(x, y), x_T of Eq. 14 from x0 with y').

    With BN frozen every sample's logits are independent of the rest of the batch, so with
    `fused` both loops share one forward/backward pass per step on the concatenated batch:
    max(steps, T) passes of up to 2B images instead of steps + T passes of B images. The
    results equal the separate loops (tested). Needs the "plain" attack variant.
    """
    if not fused or attack.variant != "plain":
        return pgd_ce(model, x, y, attack), sample_conditional(model, x0, y_prime, T, eta)
    x, x0 = x.detach(), x0.detach()
    B = x.shape[0]
    delta = torch.zeros_like(x)
    x_t = x0
    with eval_mode(model), torch.enable_grad():
        for k in range(max(attack.steps, T)):
            parts = ([x + delta] if k < attack.steps else []) + ([x_t] if k < T else [])
            inp = torch.cat(parts).detach().requires_grad_(True)
            logits = model(inp)
            value = 0.0
            if k < attack.steps:
                value = F.cross_entropy(logits[:B], y, reduction="sum")
            if k < T:
                value = value + class_logit(y_prime)(logits[-x_t.shape[0] :]).sum()
            (grad,) = torch.autograd.grad(value, inp)
            if k < attack.steps:
                g = grad[:B]
                delta = project(x, delta + attack.step_size * g / l2_norm(g), attack.eps)
            if k < T:
                x_t = ascent_step(x_t, grad[-x_t.shape[0] :], eta)
    return (x + delta).detach(), x_t.detach()
