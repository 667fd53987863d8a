import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dualat.attacks import pgd_ce, pgd_logsumexp, pgd_step, pgd_target, pgd_uniform_ce, uniform_ce
from dualat.config import AttackConfig
from dualat.sampling import attack_and_sample, sample_conditional, sample_unconditional

RATIO = AttackConfig(eps=0.5, step_size=0.1, steps=10, variant="ratio", momentum=0.9)
PLAIN = AttackConfig(eps=0.5, step_size=0.1, steps=10, variant="plain", momentum=0.0)


def _trained_bn_state(model):
    """Give BN running stats non-default values so eval and train mode differ."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model


@pytest.mark.parametrize("cfg", [RATIO, PLAIN], ids=["ratio", "plain"])
def test_pgd_stays_in_ball_and_image_and_raises_loss(tiny_wrn, cfg):
    x = torch.rand(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    tiny_wrn.eval()
    x_adv = pgd_ce(tiny_wrn, x, y, cfg)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= cfg.eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before = F.cross_entropy(tiny_wrn(x), y, reduction="none")
        after = F.cross_entropy(tiny_wrn(x_adv), y, reduction="none")
    assert (after >= before - 1e-6).all() if cfg.variant == "ratio" else after.mean() > before.mean()


def test_attack_restores_mode_and_runs_in_eval(tiny_wrn):
    _trained_bn_state(tiny_wrn)
    tiny_wrn.train()
    running = tiny_wrn.bn1.running_mean.clone()
    pgd_ce(tiny_wrn, torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), PLAIN)
    assert tiny_wrn.training and all(m.training for m in tiny_wrn.modules())
    assert torch.equal(tiny_wrn.bn1.running_mean, running)  # eval mode: no BN update
    tiny_wrn.eval()
    sample_conditional(tiny_wrn, torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), 2, 0.1)
    assert not tiny_wrn.training


def test_targeted_and_ood_attacks_raise_their_objective(tiny_wrn):
    tiny_wrn.eval()
    x = torch.rand(6, 3, 32, 32)
    t = torch.arange(6) % 10
    cfg = AttackConfig(eps=1.0, step_size=0.2, steps=10, variant="ratio", momentum=0.9)
    with torch.no_grad():
        z = tiny_wrn(x)
        z_t = tiny_wrn(pgd_target(tiny_wrn, x, t, cfg))
        z_e = tiny_wrn(pgd_logsumexp(tiny_wrn, x, cfg))
        z_u = tiny_wrn(pgd_uniform_ce(tiny_wrn, x, cfg))
    assert (z_t.gather(1, t[:, None]) >= z.gather(1, t[:, None]) - 1e-6).all()
    assert (torch.logsumexp(z_e, 1) >= torch.logsumexp(z, 1) - 1e-6).all()
    assert (uniform_ce(z_u) >= uniform_ce(z) - 1e-6).all()


def test_uniform_ce_matches_float64_formula():
    z = torch.randn(5, 7, dtype=torch.float64)
    p = torch.softmax(z, 1)
    ref = -(torch.log(p) / 7).sum(1)
    assert torch.allclose(uniform_ce(z), ref)


class Quadratic(nn.Module):
    """f(x)[k] = -||x - c_k||^2 / 2: an analytic gradient c_k - x."""

    def __init__(self, centres):
        super().__init__()
        self.c = nn.Parameter(centres)

    def forward(self, x):
        return -0.5 * ((x.flatten(1)[:, None, :] - self.c.flatten(1)[None]) ** 2).sum(-1)


def test_sampler_step_equals_eq14_with_analytic_gradient():
    torch.manual_seed(1)
    c = torch.rand(3, 3, 4, 4, dtype=torch.float64)
    model = Quadratic(c)
    x0 = torch.rand(5, 3, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    eta = 0.3
    x1 = sample_conditional(model, x0, y, T=1, eta=eta)
    g = c[y] - x0  # grad of f(x)[y]
    ref = (x0 + eta * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    assert torch.allclose(x1, ref)
    # unconditional: grad of logsumexp = sum_k softmax_k (c_k - x)
    with torch.no_grad():
        w = torch.softmax(model(x0), 1)
    gu = (w[:, :, None, None, None] * (c[None] - x0[:, None])).sum(1)
    ref_u = (x0 + eta * gu / gu.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    assert torch.allclose(sample_unconditional(model, x0, 1, eta), ref_u)
    assert torch.allclose(pgd_step(x0, g, eta), ref)


def test_pgd_step_equals_the_projected_step_in_float64():
    """x_{t+1} = Proj(x_t + eta g / ||g||_2): onto B(x, eps) by rescaling the perturbation with
    torch.renorm's rule (n > eps: times eps / (n + 1e-7), the released code's projection), then
    onto [0, 1]; with no ball only the clamp."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 4, 4, generator=g, dtype=torch.float64)
    x[:2] = x[:2].round()  # pixels at 0 and 1: the clamp bites
    x_t = (x + 0.2 * torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)).clamp(0, 1)
    grad = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eta, eps = 0.3, 0.4
    for i in range(6):  # one sample at a time, written out
        moved = x_t[i] + eta * grad[i] / grad[i].norm()
        delta = moved - x[i]
        n = delta.norm().item()
        inside = x[i] + delta * (eps / (n + 1e-7) if n > eps else 1.0)
        assert torch.allclose(pgd_step(x_t, grad, eta, x, eps)[i], inside.clamp(0, 1), rtol=0, atol=1e-15)
        assert torch.allclose(pgd_step(x_t, grad, eta)[i], moved.clamp(0, 1), rtol=0, atol=1e-15)
    stepped = pgd_step(x_t, grad, eta, x, eps)
    assert (stepped - x).flatten(1).norm(dim=1).max() <= eps + 1e-12
    assert stepped.min() >= 0 and stepped.max() <= 1
    far = pgd_step(x_t, grad, 10.0, x, eps)  # a long step ends on the sphere unless clamped
    assert ((far - x).flatten(1).norm(dim=1)[2:] - eps).abs().max() < 0.05 * eps


def test_sampler_has_no_projection(tiny_wrn):
    tiny_wrn.eval()
    x0 = torch.full((2, 3, 32, 32), 0.5)
    x_T = sample_conditional(tiny_wrn, x0, torch.tensor([1, 2]), T=20, eta=0.5)
    assert (x_T - x0).flatten(1).norm(dim=1).min() > 2.0  # moves beyond any attack ball


def test_fused_attack_and_sampler_equal_separate_passes(tiny_wrn):
    # float64: float32 trajectories of a random network part chaotically after ~10 steps
    # (REFERENCE.md), so a 1e-7 difference in the summed loss can grow past any float32 tolerance
    _trained_bn_state(tiny_wrn).eval().double()
    x, x0 = torch.rand(6, 3, 32, 32, dtype=torch.float64), torch.rand(6, 3, 32, 32, dtype=torch.float64)
    y, y_prime = torch.randint(0, 10, (6,)), torch.randint(0, 10, (6,))
    for steps, T in ((10, 0), (10, 4), (10, 10), (10, 13), (0, 3)):
        attack = dataclasses.replace(PLAIN, steps=steps)
        fused = attack_and_sample(tiny_wrn, x, y, x0, y_prime, attack, T, 0.1, fused=True)
        separate = attack_and_sample(tiny_wrn, x, y, x0, y_prime, attack, T, 0.1, fused=False)
        for a, b in zip(fused, separate):
            assert a.dtype == torch.float64 and torch.allclose(a, b, rtol=0, atol=1e-10), (steps, T)
        assert not torch.equal(fused[0], x) if steps else torch.equal(fused[0], x)  # the chains moved
        assert not torch.equal(fused[1], x0) if T else torch.equal(fused[1], x0)


def _ratio_reference(W, b, x, y, eps, eta, steps, mu, norm_ord=1):
    """RATIO's stage-1 attack on the CE of the linear model z = W x + b, one sample at a time in
    float64 numpy with the analytic input gradient W^T (softmax(z) - e_y) of the batch-mean CE
    (1/B of it): v <- mu v + g / (||g||_1 + 1e-10), delta <- Proj(delta + eta v / ||v||_2) with
    torch.renorm's rule, best iterate (REFERENCE.md, released code)."""
    W, b = W.numpy(), b.numpy()
    B = len(x)
    out = []
    for x0, label in zip(x.flatten(1).numpy(), y.tolist()):
        delta, v = np.zeros_like(x0), np.zeros_like(x0)
        best, best_val = x0.copy(), -np.inf
        for t in range(steps + 1):
            xi = x0 + delta
            z = W @ xi + b
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            val = -np.log(p[label])
            if val > best_val:
                best, best_val = xi.copy(), val
            if t == steps:
                break
            e = np.zeros_like(p)
            e[label] = 1.0
            delta, v = ratio_step(x0, delta, v, W.T @ (p - e) / B, eps, eta, mu, 1e-10, norm_ord)
        out.append(best)
    return torch.from_numpy(np.stack(out)).view_as(x)


def ratio_step(x0, delta, v, g, eps, eta, mu, l1_eps, norm_ord=1):
    """One step of RATIO's attack in float64 numpy from the batch-mean gradient g: momentum on the
    L1-normalised gradient, a step along v / ||v||_2, torch.renorm's projection, the [0, 1] clamp."""
    v = mu * v + g / (np.linalg.norm(g, ord=norm_ord) + l1_eps)
    delta = delta + eta * v / np.linalg.norm(v)
    n = np.linalg.norm(delta)
    if n > eps:
        delta = delta * (eps / (n + 1e-7))
    return np.clip(x0 + delta, 0.0, 1.0) - x0, v


def test_ratio_attack_equals_float64_reference_with_l1_momentum():
    torch.manual_seed(3)
    K, shape = 5, (3, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, K)).double()
    with torch.no_grad():
        model[1].weight.mul_(5.0)  # a peaked softmax: the gradient direction turns between steps
    x = torch.rand(6, *shape, dtype=torch.float64)
    x[:2] = x[:2].round()  # pixels at 0 and 1: the [0, 1] clamp bites
    y = torch.arange(6) % K
    cfg = AttackConfig(eps=0.5, step_size=0.15, steps=8, variant="ratio", momentum=0.9)
    W, b = model[1].weight.detach(), model[1].bias.detach()
    ref = _ratio_reference(W, b, x, y, cfg.eps, cfg.step_size, cfg.steps, cfg.momentum)
    x_adv = pgd_ce(model, x, y, cfg)
    assert x_adv.dtype == torch.float64
    assert torch.allclose(x_adv, ref, rtol=0, atol=1e-12)
    # the rule matters: the L2-normalised momentum of the earlier reading gives other iterates,
    # 1e7 times farther from the reference than the tolerance above
    ref_l2 = _ratio_reference(W, b, x, y, cfg.eps, cfg.step_size, cfg.steps, cfg.momentum, norm_ord=2)
    assert (ref_l2 - ref).abs().max() > 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("variant", ["ratio", "plain"])
def test_attacks_run_in_the_input_dtype(tiny_wrn, dtype, variant):
    model = tiny_wrn.to(dtype).eval()
    x = torch.rand(4, 3, 32, 32).to(dtype)
    y = torch.tensor([0, 1, 2, 3])
    cfg = RATIO if variant == "ratio" else PLAIN
    x_adv = pgd_ce(model, x, y, dataclasses.replace(cfg, steps=3))
    assert x_adv.dtype == dtype and torch.isfinite(x_adv).all()
    assert (x_adv - x).double().flatten(1).norm(dim=1).max() <= cfg.eps * 1.01
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if variant == "ratio":  # best iterate: never worse than the clean input
        with torch.no_grad():
            before = F.cross_entropy(model(x), y, reduction="none")
            after = F.cross_entropy(model(x_adv), y, reduction="none")
        assert (after >= before).all()
