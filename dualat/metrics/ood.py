"""OOD detection scores and AUROC (in-distribution = positive class)."""

from __future__ import annotations

import numpy as np
import torch

from dualat.energy import marginal_energy


def score_max_prob(logits: torch.Tensor) -> torch.Tensor:
    """max_y p(y|x) (N,) from logits (N, K); higher = more in-distribution."""
    return torch.softmax(logits.float(), dim=1).amax(1)


def score_neg_energy(logits: torch.Tensor) -> torch.Tensor:
    """-E(x) = logsumexp_y f(x)[y] (N,) from logits (N, K); higher = more in-distribution."""
    return -marginal_energy(logits.float())


def auroc(scores_in: np.ndarray | torch.Tensor, scores_out: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve separating in-distribution (positive) from OOD scores, in [0, 1]."""
    from sklearn.metrics import roc_auc_score  # lazy: importing scikit-learn takes ~1 s

    s_in, s_out = (np.asarray(torch.as_tensor(s).detach().cpu(), dtype=np.float64) for s in (scores_in, scores_out))
    y_true = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    return float(roc_auc_score(y_true, np.concatenate([s_in, s_out])))
