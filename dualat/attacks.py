"""L2 PGD attacks: pure functions of (model, x, ...) -> x_adv, images in [0, 1].

Every attack runs the model in eval mode and restores the mode it found. Each public function
has one objective; they share `pgd_l2`, which maximises a per-sample objective of the logits
inside the L2 ball B(x, eps) ∩ [0, 1]^d. Its step, `pgd_step`, is also the step of the samplers
(`dualat.sampling`, without the ball) and of the fused stage-2 loop.

Variants (`AttackConfig.variant`):
- "ratio": zero start, momentum on the L1-normalised gradient, v <- mu * v + g / (||g||_1 + 1e-10)
  (per sample, g the gradient of the batch-mean objective), step eta * v / ||v||_2, and the
  iterate with the highest objective is returned (the RATIO code's attack as the released code
  runs it, for in- and out-distribution inputs alike: REFERENCE.md, 'Measured against the
  released code'; the paper text does not describe the attack's inner rule).
- "plain": zero start, step eta * g / ||g||_2, last iterate (the released stage-2 attack and the
  released OOD evaluation attack of Tables 10-12).
Both project onto the eps-ball with torch.renorm's rule (`project_l2`), as every L2 attack of
the released code does, then clamp to [0, 1].
"""

from __future__ import annotations

import math
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


# The released RATIO attack divides by 1e-10 + ||g||_1, g the gradient of the MEAN objective over
# the attacked batch (InNOutRobustness, utils/adversarial_attacks/argmin_pgd.py, the class behind
# --id_pgd / --od_pgd argmin, the default; vendored in DAT @fb2ffc7). A value, not code, carried over.
RATIO_L1_EPS = 1e-10


def l1_normalise(grad: torch.Tensor) -> torch.Tensor:
    """g / (||g||_1 + RATIO_L1_EPS) per sample of (B, ...), with g = grad / B the gradient of the
    batch-mean objective (`grad` is the gradient of the batch sum, as `input_grad` returns it).
    The epsilon only matters where ||g||_1 is tiny (a saturated softmax on OOD inputs)."""
    g = grad / len(grad)  # d mean / dx: the released code differentiates the batch mean
    return g / (g.flatten(1).abs().sum(dim=1) + RATIO_L1_EPS).view(-1, *([1] * (g.dim() - 1)))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each perturbation of (B, ...) onto the L2 ball of radius eps with torch.renorm's
    rule, the projection of every L2 attack in the released code: a row whose norm exceeds eps
    is scaled by eps / (norm + 1e-7) (so it ends a hair inside the sphere), others are kept."""
    return torch.renorm(delta, p=2, dim=0, maxnorm=eps)


def pgd_step(
    x_t: torch.Tensor, grad: torch.Tensor, eta: float, x: torch.Tensor | None = None, eps: float = math.inf
) -> torch.Tensor:
    """One L2 PGD ascent step, the one step of every attack and sampler in the package:

        x_{t+1} = Proj(x_t + eta * grad / ||grad||_2)      per sample of (B, C, H, W)

    with Proj onto B(x, eps) ∩ [0, 1]^d for an attack around x, or (x None: the samplers of
    Eq. 8 and 14, which have no ball) the clamp to [0, 1]. `grad` is the ascent direction: the
    gradient of the objective, or RATIO's momentum; the step normalises it."""
    x_next = x_t + eta * grad / l2_norm(grad)
    if x is not None:
        x_next = x + project_l2(x_next - x, eps)
    return x_next.clamp(0, 1)


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
    x_t, velocity = x, torch.zeros_like(x)
    best_x, best_value = x.clone(), None
    with eval_mode(model):
        for _ in range(cfg.steps):
            value, grad = input_grad(model, x_t, objective)
            if cfg.variant == "ratio":  # keep the best iterate seen so far
                if best_value is None:  # in the objective's dtype (float64, bf16, ...)
                    best_value = torch.full_like(value, -float("inf"))
                better = value > best_value
                best_x[better], best_value[better] = x_t[better], value[better]
                velocity = cfg.momentum * velocity + l1_normalise(grad)  # released code: L1
                grad = velocity  # the step goes along velocity / ||velocity||_2
            x_t = pgd_step(x_t, grad, cfg.step_size, x, cfg.eps)
        if cfg.variant != "ratio":
            return x_t.detach()
        with torch.no_grad():
            value = objective(model(x_t))
        better = value > best_value
        best_x[better] = x_t[better]
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
