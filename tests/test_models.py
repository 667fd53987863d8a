import json

import pytest
import torch

from dualat.models import WideResNet, build_model, load_released, strip_prefixes
from tests.conftest import SHARED_DATA

LAYOUT = SHARED_DATA.parent / "wrn3410_state_dict_layout.json"


def test_wrn34_10_parameter_count_and_key_layout():
    model = WideResNet(34, 10, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 46_160_474
    state = model.state_dict()
    assert len(state) == 191
    assert sum(1 for _ in model.parameters()) == 98
    assert "normalize.mean" not in state  # normalisation stays out of the state dict
    if LAYOUT.exists():
        layout = json.loads(LAYOUT.read_text())["num_classes_10"]
        assert [(k, list(v.shape)) for k, v in state.items()] == [(k, s) for k, s in layout]


def test_wrn34_10_cifar100_layout():
    if not LAYOUT.exists():
        pytest.skip("shared layout file not present")
    layout = json.loads(LAYOUT.read_text())["num_classes_100"]
    state = WideResNet(34, 10, num_classes=100).state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(k, s) for k, s in layout]


def test_released_prefixes_load_strictly(tiny_wrn):
    state = tiny_wrn.state_dict()
    saved_plain = {f"module.{k}": v for k, v in state.items()}
    saved_ema = {f"module.module.{k}": v + 0 for k, v in state.items()} | {"module.n_averaged": torch.tensor(3)}
    saved_base = {f"base_model.{k}": v for k, v in state.items()}
    for saved in (saved_plain, saved_ema, saved_base):
        fresh = WideResNet(10, 1)
        load_released(fresh, saved)
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    assert set(strip_prefixes(saved_ema)) == set(state)


def test_normalisation_is_inside_forward(tiny_wrn):
    tiny_wrn.eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    inner = tiny_wrn.conv1((x - mean) / std)
    assert torch.allclose(tiny_wrn.conv1(tiny_wrn.normalize(x)), inner)


def test_build_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="model.arch"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="model.depth"):
        WideResNet(depth=11)


def test_resnet50_shape():
    model = build_model("resnet50", 9).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 9)
