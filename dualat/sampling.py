"""Samplers of the energy model: normalised-gradient ascent from OOD seeds, no projection.

Conditional (ancestral, Eq. 14): x <- clamp(x + eta * g / ||g||_2, 0, 1), g = d f(x)[y] / dx.
Unconditional (Eq. 8): the same with g = d logsumexp f(x) / dx = -dE(x)/dx.
The step is the attacks' L2 step (`dualat.attacks.pgd_step`) without the eps-ball; kept apart
from the attacks otherwise: no ball, no best iterate, other objectives.
"""

from __future__ import annotations

import torch
from torch import nn

from dualat.attacks import Objective, ce_objective, eval_mode, input_grad, pgd_ce, pgd_step
from dualat.config import AttackConfig
from dualat.energy import joint_energy, marginal_energy


def class_logit(y: torch.Tensor) -> Objective:
    """Objective f(x)[y] = -E(x, y) (Eq. 1) for labels y (B,)."""
    return lambda logits: -joint_energy(logits, y)


def neg_energy(logits: torch.Tensor) -> torch.Tensor:
    """-E(x) = logsumexp_y f(x)[y] (Eq. 4), per sample."""
    return -marginal_energy(logits)


def sample(model: nn.Module, x0: torch.Tensor, objective: Objective, T: int, eta: float) -> torch.Tensor:
    """x_T of T ascent steps on `objective` from seeds x0 (B, C, H, W) in [0, 1], in eval mode."""
    x_t = x0.detach()
    with eval_mode(model):
        for _ in range(T):
            _, grad = input_grad(model, x_t, objective)
            x_t = pgd_step(x_t, grad, eta)
    return x_t.detach()


def sample_conditional(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, T: int, eta: float) -> torch.Tensor:
    """x_T of T ascent steps on f(x)[y] from seeds x0 (B, C, H, W) in [0, 1] (Eq. 14)."""
    return sample(model, x0, class_logit(y), T, eta)


def sample_unconditional(model: nn.Module, x0: torch.Tensor, T: int, eta: float) -> torch.Tensor:
    """x_T of T ascent steps on logsumexp f(x) from seeds x0 (B, C, H, W) in [0, 1] (Eq. 8)."""
    return sample(model, x0, neg_energy, T, eta)


def _stacked(chains: list[tuple[torch.Tensor, Objective]]) -> Objective:
    """One objective over the concatenation of the chains' inputs: each chain's rows are scored
    by its own objective."""
    sizes = [len(inputs) for inputs, _ in chains]
    return lambda logits: torch.cat([f(z) for (_, f), z in zip(chains, logits.split(sizes))])


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
    max(steps, T) passes of up to 2B images instead of steps + T passes of B images. Each chain
    takes the same `pgd_step` on the same objective as the separate loops, so the results equal
    theirs (tested). Needs the "plain" attack variant.
    """
    if not fused or attack.variant != "plain":
        return pgd_ce(model, x, y, attack), sample_conditional(model, x0, y_prime, T, eta)
    x, x_adv, x_t = x.detach(), x.detach(), x0.detach()
    ce, energy = ce_objective(y), class_logit(y_prime)  # Eq. 10 and -E(x, y') of Eq. 14
    with eval_mode(model):
        for k in range(max(attack.steps, T)):
            chains = ([(x_adv, ce)] if k < attack.steps else []) + ([(x_t, energy)] if k < T else [])
            _, grad = input_grad(model, torch.cat([inputs for inputs, _ in chains]), _stacked(chains))
            if k < attack.steps:
                x_adv = pgd_step(x_adv, grad[: len(x)], attack.step_size, x, attack.eps)
            if k < T:
                x_t = pgd_step(x_t, grad[-len(x0) :], eta)
    return x_adv.detach(), x_t.detach()
