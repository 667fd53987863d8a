"""The paper profile runs the released code's values (issue 16, REFERENCE.md 'Measured against
the released code'); each is checked in float64 against a reference written from its formula:

1. RATIO's loss: 0.5 * L_AT-CE + 0.5 * KL(U || p(y|x'_ood)) (Eq. 13 has weights 1 and 1).
2. The curriculum cap T_max: CIFAR-10 50, CIFAR-100 50 (attack.max_steps of the released runs
   behind the reported models), RIN 18 (no released run: Table 5). Table 5: 45 / 45 / 18.
3. The OOD evaluation attack (Tables 10-12): plain normalised-gradient steps, projection onto
   the eps-ball, clamp, last iterate; 20 x 0.1 within 1.0 (CIFAR), 10 x 1.0 within 3.0 (RIN).
4. RATIO's OOD training attack: torch.renorm's projection and 1e-10 + ||g||_1 in the L1
   normalisation of the momentum.

The models are linear, z = W x + b on (B, 3, 4, 4) images, so every input gradient is written
out by hand: d CE(y)/dz = p - e_y, d CE(U, p)/dz = p - 1/K, d logsumexp(z)/dz = p.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dualat import config
from dualat.attacks import RATIO_L1_EPS, l1_normalise, pgd_logsumexp, pgd_uniform_ce, project_l2
from dualat.train import make_optimizer, stage1_step
from tests.test_attacks_sampling import ratio_step

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SHAPE, K = (3, 4, 4), 5


def _linear(seed: int, scale: float = 1.0, shape: tuple[int, ...] = SHAPE) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), K)).double()
    with torch.no_grad():
        model[1].weight.mul_(scale)
        model[1].bias.mul_(scale)
    return model


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _paper(dataset: str) -> config.Config:
    return config.load(PARAMS, dataset=dataset, profile="paper")


# --- 1. RATIO's loss weights ----------------------------------------------------------------------


def _ratio_sgd_step_by_hand(W, b, x, y, x_ood, at_weight, lam, optim):
    """W, b after one SGD step (Nesterov, weight decay, first step: buffer = gradient) on
    at_weight * mean CE(y) + lam * mean KL(U || p) of the linear model, by the formulas."""
    p_in, p_ood = _softmax(x @ W.T + b), _softmax(x_ood @ W.T + b)
    d_in = (p_in - np.eye(K)[y]) / len(x)  # d mean CE / dz
    d_ood = (p_ood - 1.0 / K) / len(x_ood)  # d mean KL(U || p) / dz = d mean CE(U, p) / dz
    gW = at_weight * d_in.T @ x + lam * d_ood.T @ x_ood
    gb = at_weight * d_in.sum(0) + lam * d_ood.sum(0)
    factor = 1 + optim.momentum if optim.nesterov else 1.0  # d + mu * buf with buf = d
    W1 = W - optim.lr * factor * (gW + optim.weight_decay * W)
    b1 = b - optim.lr * factor * (gb + optim.weight_decay * b)
    kl = np.mean([np.sum(np.full(K, 1 / K) * (np.log(1 / K) - np.log(p))) for p in p_ood])
    return W1, b1, kl


@pytest.mark.parametrize("dataset", config.DATASETS)
def test_one_ratio_sgd_step_is_half_at_ce_plus_half_kl(dataset):
    cfg = _paper(dataset)
    assert (cfg.ratio.at_weight, cfg.ratio.lam) == (0.5, 0.5)  # released; Eq. 13: 1 and 1
    g = torch.Generator().manual_seed(0)
    x, x_ood = torch.rand(8, *SHAPE, generator=g, dtype=torch.float64), torch.rand(6, *SHAPE, generator=g).double()
    y = torch.arange(8) % K
    no_attack = dataclasses.replace(cfg.stage1.attack, steps=0)  # the loss alone: x_adv = x
    steps = {}
    for weights in ((cfg.ratio.at_weight, cfg.ratio.lam), (1.0, 1.0)):
        ratio = dataclasses.replace(
            cfg.ratio, at_weight=weights[0], lam=weights[1], ood_attack=dataclasses.replace(no_attack, eps=1.0)
        )
        model = _linear(1, scale=3.0)
        W, b = (t.detach().numpy().copy() for t in (model[1].weight, model[1].bias))
        opt = make_optimizer(model, cfg.stage1.optim)
        _, stats = stage1_step(model, opt, no_attack, (x, y), ratio, x_ood)
        W1, b1, kl = _ratio_sgd_step_by_hand(
            W, b, x.flatten(1).numpy(), y.numpy(), x_ood.flatten(1).numpy(), *weights, cfg.stage1.optim
        )
        update = np.abs(W1 - W).max()
        assert np.abs(model[1].weight.detach().numpy() - W1).max() < 1e-12 * max(update, 1.0)
        assert np.abs(model[1].bias.detach().numpy() - b1).max() < 1e-12
        # both forms of the OOD term: KL(U || p) (released code) = CE(U, p) (Eq. 13) - log K
        assert abs(stats["ood_kl"].item() - kl) < 1e-12
        assert abs(stats["ood_ce"].item() - stats["ood_kl"].item() - math.log(K)) < 1e-12
        steps[weights] = model[1].weight.detach().numpy() - W
    # Eq. 13's unweighted loss moves the weights by another step (the data terms twice as fast)
    released, text = steps.values()
    assert np.abs(released - text).max() > 0.1 * np.abs(released).max()


# --- 2. the curriculum cap ------------------------------------------------------------------------


def test_paper_curriculum_cap_is_the_released_runs():
    # CIFAR: attack.max_steps of the runs behind the released "T40" (CIFAR-10) and "T45" (CIFAR-100)
    # models; RIN: Table 5 (no released RIN stage-2 run)
    caps = {dataset: _paper(dataset).stage2.sampler.T_max for dataset in config.DATASETS}
    assert caps == {"cifar10": 50, "cifar100": 50, "rin": 18}
    # Table 5's 45 stays one key away, and only that dataset's key changes
    text = config.load(PARAMS, dataset="cifar10", profile="paper", overrides={"stage2.sampler.T_max": 45})
    assert text.stage2.sampler.T_max == 45 and _paper("cifar100").stage2.sampler.T_max == 50


# --- 3. the OOD evaluation attack -----------------------------------------------------------------


def _plain_reference(W, b, x, eps, eta, steps, objective):
    """Last iterate of `steps` plain L2 PGD steps maximising `objective`, one sample at a time:
    delta <- renorm(delta + eta g / ||g||_2) (n > eps: times eps / (n + 1e-7)), then the clamp."""
    out = []
    for x0 in x:
        delta = np.zeros_like(x0)
        for _ in range(steps):
            p = _softmax(W @ (x0 + delta) + b)
            g = W.T @ (p - 1.0 / K if objective == "uniform_ce" else p)
            delta = delta + eta * g / np.linalg.norm(g)
            n = np.linalg.norm(delta)
            if n > eps:
                delta = delta * (eps / (n + 1e-7))
            delta = np.clip(x0 + delta, 0.0, 1.0) - x0
        out.append(x0 + delta)
    return np.stack(out)


@pytest.mark.parametrize("dataset", config.DATASETS)
def test_ood_evaluation_attack_is_the_released_plain_pgd(dataset):
    a = _paper(dataset).evaluate.ood_attack
    released = (1.0, 0.1, 20) if dataset != "rin" else (3.0, 1.0, 10)  # RIN: A.4 says eps 7.0
    assert (a.eps, a.step_size, a.steps, a.variant) == (*released, "plain")
    shape = (3, 8, 8)  # room for RIN's eps 3.0 inside [0, 1]^d
    model = _linear(2, scale=0.3, shape=shape)
    W, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    x = 0.25 + 0.5 * torch.rand(6, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[:2] = x[:2].round()  # pixels at 0 and 1: the clamp bites
    for attack, objective in ((pgd_uniform_ce, "uniform_ce"), (pgd_logsumexp, "logsumexp")):
        x_adv = attack(model, x, a)
        ref = _plain_reference(W, b, x.flatten(1).numpy(), a.eps, a.step_size, a.steps, objective)
        assert x_adv.dtype == torch.float64
        assert np.abs(x_adv.flatten(1).numpy() - ref).max() < 1e-12, objective
        assert ((x_adv - x).flatten(1).norm(dim=1) <= a.eps).all()
        unbounded = _plain_reference(W, b, x.flatten(1).numpy(), math.inf, a.step_size, a.steps, objective)
        assert np.abs(unbounded - ref).max() > 1e-3, objective  # the ball bites on these inputs


# --- 4. RATIO's OOD training attack ---------------------------------------------------------------


def test_projection_is_torch_renorms_rule():
    delta = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    delta[0] *= 1e-3  # inside the ball: kept as it is
    eps = 0.7
    n = delta.flatten(1).norm(dim=1)
    factor = torch.where(n > eps, eps / (n + 1e-7), torch.ones_like(n))
    assert torch.allclose(project_l2(delta, eps), delta * factor.view(-1, 1, 1, 1), rtol=0, atol=1e-15)
    assert torch.equal(project_l2(delta, eps)[0], delta[0])
    assert (project_l2(delta, eps).flatten(1).norm(dim=1)[1:] < eps).all()  # a hair inside the sphere


def test_l1_normalisation_adds_the_released_epsilon_to_the_batch_mean_gradient():
    grad = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grad[1:] *= 1e-10  # L1 norms of the mean gradient near the epsilon: it matters
    assert RATIO_L1_EPS == 1e-10
    for i in range(4):
        g = grad[i].numpy() / len(grad)
        ref = g / (np.abs(g).sum() + 1e-10)
        assert np.abs(l1_normalise(grad)[i].numpy() - ref).max() <= 1e-15 * np.abs(ref).max()
    assert abs(l1_normalise(grad)[0].abs().sum().item() - 1) < 1e-9  # a large gradient: unit L1


def _ratio_ood_reference(W, b, x, eps, eta, steps, mu, l1_eps):
    """RATIO's OOD attack maximising CE(U, p) (= KL(U || p) + log K), one sample at a time: the
    batch-mean gradient g = W^T (p - 1/K) / B, v <- mu v + g / (||g||_1 + l1_eps),
    delta <- renorm(delta + eta v / ||v||_2), clamp; the iterate with the highest objective."""
    out = []
    for x0 in x:
        delta, v = np.zeros_like(x0), np.zeros_like(x0)
        best, best_val = x0.copy(), -np.inf
        for t in range(steps + 1):
            p = _softmax(W @ (x0 + delta) + b)
            val = -np.log(p).mean()
            if val > best_val:
                best, best_val = x0 + delta, val
            if t == steps:
                break
            delta, v = ratio_step(x0, delta, v, W.T @ (p - 1.0 / K) / len(x), eps, eta, mu, l1_eps)
        out.append(best)
    return np.stack(out)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_ratio_ood_training_attack_equals_the_float64_reference(dataset):
    a = _paper(dataset).ratio.ood_attack
    assert (a.eps, a.step_size, a.steps, a.variant, a.momentum) == (1.0, 0.1, 20, "ratio", 0.9)
    model = _linear(3, scale=2e-5)  # an almost uniform softmax: ||g||_1 of the order of 1e-10
    W, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x_adv = pgd_uniform_ce(model, x, a).flatten(1).numpy()
    args = (W, b, x.flatten(1).numpy(), a.eps, a.step_size, a.steps, a.momentum)
    ref = _ratio_ood_reference(*args, l1_eps=1e-10)
    # p - 1/K ~ 1e-5 carries ~1e-11 relative rounding of its own, hence 1e-10 (not 1e-12)
    assert np.abs(x_adv - ref).max() < 1e-10
    # without the epsilon the momentum weighs the steps otherwise: other iterates
    assert np.abs(_ratio_ood_reference(*args, l1_eps=0.0) - ref).max() > 1e-6
