"""Training losses. Each returns (loss, stats); stats are detached tensors on the loss's device
(no host sync), to be logged when the caller wants them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dualat.attacks import uniform_ce
from dualat.sampling import neg_energy


def at_ce(logits_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_AT-CE (Eq. 11): mean cross-entropy of the adversarial logits (B, K) to labels y (B,)."""
    loss = F.cross_entropy(logits_adv, y)
    acc = (logits_adv.argmax(1) == y).float().mean()
    return loss, {"at_ce": loss.detach(), "adv_acc": acc.detach()}


def bce_energy(
    logits_pos: torch.Tensor, logits_neg: torch.Tensor, reduction: str = "sum_of_means"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_BCE (Eq. 9) on the marginal energy, sigma(-E(x)) = sigmoid(logsumexp f(x)).

    Positives x_hat ~ p_data (target 1), negatives x_T ~ p_theta (target 0); logits (B, K).
    "sum_of_means" is Eq. 9 (mean over positives + mean over negatives); "mean_2b" is the
    released code's BCE-with-logits mean over the 2B values (half of Eq. 9 for equal batches).
    """
    s_pos, s_neg = neg_energy(logits_pos), neg_energy(logits_neg)
    # -log sigma(s) = softplus(-s); -log(1 - sigma(s)) = softplus(s)
    l_pos, l_neg = F.softplus(-s_pos), F.softplus(s_neg)
    if reduction == "sum_of_means":
        loss = l_pos.mean() + l_neg.mean()
    elif reduction == "mean_2b":
        loss = torch.cat([l_pos, l_neg]).mean()
    else:
        raise ValueError(f"stage2.sampler.bce_reduction must be 'sum_of_means' or 'mean_2b', got {reduction!r}")
    stats = {"bce": loss.detach(), "energy_pos": -s_pos.detach().mean(), "energy_neg": -s_neg.detach().mean()}
    return loss, stats


def ratio_ood(logits_ood_adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RATIO's OOD term on attacked OOD logits (B, K), batch mean, in two forms that differ by a
    constant:

        Eq. 13 (text):     CE(U, p(y|x'_ood)) = -(1/K) sum_k log p_k
        released code:     KL(U || p(y|x'_ood)) = CE(U, p) - log K

    The CE form is computed and returned as the loss: log K does not depend on the weights, so
    the gradient, the SGD step and the attack that maximises it are the same for both forms.
    Both values are in the stats ("ood_ce", "ood_kl"; "ood_kl" is what the released code logs).
    """
    loss = uniform_ce(logits_ood_adv).mean()
    conf = F.softmax(logits_ood_adv, dim=1).amax(1).mean()
    kl = loss.detach() - math.log(logits_ood_adv.shape[1])
    return loss, {"ood_ce": loss.detach(), "ood_kl": kl, "ood_conf": conf.detach()}


def pairwise_auc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """AUC of scores pos (P,) above neg (N,) as P(pos > neg) + P(pos = neg) / 2; stays on device."""
    diff = pos[:, None] - neg[None, :]
    return (diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()
