"""The two energies of a classifier f (Sec. 3.1), defined once for the whole package.

    E(x, y) = -f(x)[y]                  joint energy (Eq. 1)
    E(x)    = -logsumexp_y f(x)[y]      marginal energy (Eq. 4)

Both take the logits f(x) (B, K) and return (B,). Samplers and attacks ascend -E; the OOD
score of Tables 10-12 is -E(x).
"""

from __future__ import annotations

import torch


def joint_energy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """E(x, y) = -f(x)[y] (Eq. 1) for logits (B, K) and labels y (B,)."""
    return -logits.gather(1, y[:, None]).squeeze(1)


def marginal_energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = -logsumexp_y f(x)[y] (Eq. 4) for logits (B, K)."""
    return -torch.logsumexp(logits, dim=1)
