import math

import numpy as np
import pytest
import torch

from dualat.curriculum import Curriculum
from dualat.losses import at_ce, bce_energy, pairwise_auc, ratio_ood


def _lse(z):
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def _sigmoid(s):
    return 1 / (1 + np.exp(-s))


def test_at_ce_matches_float64():
    z = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    zn = z.numpy()
    ref = np.mean([-(zn[i, y[i]] - _lse(zn[i : i + 1])[0]) for i in range(6)])
    loss, stats = at_ce(z, y)
    assert abs(loss.item() - ref) < 1e-12
    assert stats["at_ce"].item() == loss.item()


@pytest.mark.parametrize("reduction", ["sum_of_means", "mean_2b"])
def test_bce_energy_matches_eq9_float64(reduction):
    torch.manual_seed(0)
    pos = torch.randn(5, 10, dtype=torch.float64) * 3
    neg = torch.randn(7, 10, dtype=torch.float64) * 3
    # Eq. 9 with E(x) = -logsumexp f(x) (Eq. 4): -E log sigma(-E(x_hat)) - E log(1 - sigma(-E(x_T)))
    s_pos, s_neg = _lse(pos.numpy()), _lse(neg.numpy())
    terms_pos, terms_neg = -np.log(_sigmoid(s_pos)), -np.log(1 - _sigmoid(s_neg))
    ref = (
        terms_pos.mean() + terms_neg.mean()
        if reduction == "sum_of_means"
        else np.concatenate([terms_pos, terms_neg]).mean()
    )
    loss, _ = bce_energy(pos, neg, reduction)
    assert abs(loss.item() - ref) < 1e-10


def test_bce_mean_2b_is_half_of_eq9_for_equal_batches():
    pos, neg = torch.randn(8, 10), torch.randn(8, 10)
    assert torch.allclose(bce_energy(pos, neg, "mean_2b")[0] * 2, bce_energy(pos, neg)[0])
    with pytest.raises(ValueError, match="bce_reduction"):
        bce_energy(pos, neg, "sum")


def test_ratio_ood_matches_float64():
    z = torch.randn(4, 10, dtype=torch.float64)
    zn = z.numpy()
    ref = np.mean([-(zn[i] - _lse(zn[i : i + 1])[0]).mean() for i in range(4)])
    assert abs(ratio_ood(z)[0].item() - ref) < 1e-12


def test_pairwise_auc_matches_sklearn_definition():
    from sklearn.metrics import roc_auc_score

    pos = torch.tensor([0.9, 0.4, 0.4, 0.7])
    neg = torch.tensor([0.1, 0.4, 0.8])
    labels = np.r_[np.ones(4), np.zeros(3)]
    ref = roc_auc_score(labels, np.r_[pos.numpy(), neg.numpy()])
    assert math.isclose(pairwise_auc(pos, neg).item(), ref, rel_tol=1e-6)


def _run(cur, values, rule="auc"):
    Ts = []
    for v in values:
        t = torch.tensor(v)
        cur.update(t, t)
        Ts.append(cur.T)
    return Ts


def test_curriculum_raises_T_after_a_full_window_of_high_auc():
    cur = Curriculum(T_max=2, rule="auc", threshold=0.8, window_images=1000, batch_size=256)
    assert cur.window == 4  # ceil(1000 / 256)
    # window full at batch 4 with mean 0.85 -> raise decided after batch 4, visible to batch 6
    values = [0.9, 0.9, 0.8, 0.8] + [0.9] * 3 + [0.6] + [0.9] * 8
    Ts = _run(cur, values)
    # Ts[k] is the T returned after batch k+1 (used for batch k+2); one batch of lag
    assert Ts[:5] == [0, 0, 0, 0, 1]
    # history cleared at the raise: needs 4 new batches; batches 5-8 mean (0.9*3+0.6)/4 = 0.825 -> raise
    assert Ts[8] == 2
    # capped at T_max
    assert max(Ts) == 2 and Ts[-1] == 2


def test_curriculum_does_not_raise_below_threshold_and_loss_rule():
    cur = Curriculum(T_max=45, rule="auc", threshold=0.8, window_images=128, batch_size=64)
    assert _run(cur, [0.79] * 20)[-1] == 0
    cur = Curriculum(T_max=45, rule="loss", threshold=0.5, window_images=128, batch_size=64)
    assert _run(cur, [0.6, 0.4, 0.4, 0.6, 0.6, 0.6])[-1] == 1


def test_curriculum_state_round_trip():
    a = Curriculum(T_max=5, rule="auc", threshold=0.8, window_images=3, batch_size=1)
    b = Curriculum(T_max=5, rule="auc", threshold=0.8, window_images=3, batch_size=1)
    _run(a, [0.9, 0.9, 0.9, 0.95])
    b.load_state_dict(a.state_dict())
    rest = [0.9, 0.9, 0.7, 0.99, 0.99, 0.99]
    assert _run(a, rest) == _run(b, rest)


def _reference_T(values, T_max, threshold, window):
    """The released curriculum written out: T used by each batch, a raise applying to the very
    next batch (REFERENCE.md, 'Measured against the released code')."""
    T, hist, used = 0, [], []
    for v in values:
        used.append(T)  # this batch runs with T
        hist.append(v)
        if len(hist) >= window and sum(hist[-window:]) / window >= threshold and T < T_max:
            T, hist = T + 1, []
    return used


def _used_T(cur, values):
    """T used by each batch when the training loop asks the curriculum after every batch."""
    used = []
    for v in values:
        used.append(cur.T)
        t = torch.tensor(v, dtype=torch.float64)
        cur.update(t, t)
    return used


def test_curriculum_lag0_raises_T_for_the_very_next_batch():
    g = torch.Generator().manual_seed(0)
    values = (0.55 + 0.45 * torch.rand(200, generator=g, dtype=torch.float64)).tolist()  # AUCs in [0.55, 1]
    ref = _reference_T(values, T_max=6, threshold=0.8, window=3)
    cur = Curriculum(T_max=6, rule="auc", threshold=0.8, window_images=300, batch_size=128, lag=0)
    assert cur.window == 3
    assert _used_T(cur, values) == ref
    assert 0 < max(ref) == 6 == ref[-1]  # the sequence raises T several times and reaches the cap
    # lag 1 (overlap-friendly) is the same trajectory one batch later
    lagged = _used_T(Curriculum(T_max=6, rule="auc", threshold=0.8, window_images=300, batch_size=128), values)
    assert lagged == [0] + ref[:-1]
    with pytest.raises(ValueError, match="curriculum_lag"):
        Curriculum(T_max=6, rule="auc", threshold=0.8, window_images=300, batch_size=128, lag=2)


def test_energies_are_defined_once_and_match_float64():
    """Eq. 1 and Eq. 4 against explicit float64 formulas; samplers, attacks and OOD scores use them."""
    from dualat.energy import joint_energy, marginal_energy
    from dualat.metrics.ood import score_neg_energy
    from dualat.sampling import class_logit, neg_energy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64) * 10
    y = torch.tensor([0, 3, 6, 2, 2])
    for i in range(5):
        assert joint_energy(logits, y)[i].item() == -logits[i, y[i]].item()
        row = logits[i].tolist()
        top = max(row)
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        assert abs(marginal_energy(logits)[i].item() + lse) < 1e-12
    assert torch.equal(class_logit(y)(logits), -joint_energy(logits, y))
    assert torch.equal(neg_energy(logits), -marginal_energy(logits))
    assert torch.allclose(score_neg_energy(logits), -marginal_energy(logits).float())
