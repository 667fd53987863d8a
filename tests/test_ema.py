from unittest import mock

import pytest
import torch
from torch import nn

from dualat.ema import EMA


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()


def _perturb(model, k):
    """A fake optimiser step plus a train-mode pass (BN statistics and num_batches_tracked move)."""
    g = torch.Generator().manual_seed(100 + k)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.train()
        model(torch.randn(8, 6, generator=g, dtype=torch.float64))


def _reference(states, decay, warmup):
    """float64 EMA of a list of state dicts, written out: the released code copies on its first
    update (n = 0), then decay_n = min(decay, (1 + n) / (10 + n)) (REFERENCE.md); integer
    buffers are copied."""
    avg = {k: v.clone() for k, v in states[0].items()}  # the model at construction
    for n, state in enumerate(states[1:]):
        d = decay if not warmup else (0.0 if n == 0 else min(decay, (1 + n) / (10 + n)))
        for k, v in state.items():
            avg[k] = d * avg[k] + (1 - d) * v if v.dtype.is_floating_point else v.clone()
    return avg


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_equals_float64_reference(warmup):
    model = _net()
    ema = EMA(model, decay=0.9, warmup=warmup)
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for k in range(6):
        _perturb(model, k)
        ema.update(model)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    ref = _reference(states, 0.9, warmup)
    got = ema.module.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype
        assert torch.allclose(got[k], v, rtol=0, atol=1e-12), k
    assert got["1.num_batches_tracked"].item() == 6  # integer buffer copied, not averaged
    assert not torch.equal(got["1.running_mean"], states[-1]["1.running_mean"])  # BN buffers averaged


def test_first_update_copies_the_model_under_warmup():
    model = _net()
    ema = EMA(model, decay=0.999, warmup=True)
    assert ema.current_decay() == 0.0
    _perturb(model, 0)
    ema.update(model)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.state_dict().values(), model.state_dict().values()))
    assert ema.current_decay() == pytest.approx(2 / 11)  # n = 1
    ema.n = 10_000
    assert ema.current_decay() == 0.999


def test_update_uses_foreach_kernels_not_a_loop_per_tensor():
    model = _net()
    ema = EMA(model, decay=0.9)
    ema.update(model)  # the copy
    n_float = sum(v.dtype.is_floating_point for v in model.state_dict().values())
    with mock.patch("torch._foreach_lerp_", wraps=torch._foreach_lerp_) as lerp:
        ema.update(model)
    assert lerp.call_count == 1 and len(lerp.call_args.args[0]) == n_float  # one call, all tensors


def test_state_round_trip():
    a = EMA(_net(), decay=0.9)
    model = _net()
    for k in range(3):
        _perturb(model, k)
        a.update(model)
    b = EMA(_net(), decay=0.9)
    b.load_state_dict(a.state_dict())
    _perturb(model, 9)
    a.update(model)
    b.update(model)
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()))
