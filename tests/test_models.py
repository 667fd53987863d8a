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


# Full-precision CIFAR-10 statistics of the released models (REFERENCE.md, "Measured against the
# released code"), written out here independently of dualat.models.
RELEASED_MEAN = (0.4913997551666284, 0.48215855929893703, 0.4465309133731618)
RELEASED_STD = (0.24703225141799082, 0.24348516474564, 0.26158783926049628)


def test_normalisation_is_inside_forward(tiny_wrn):
    tiny_wrn.eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(RELEASED_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(RELEASED_STD).view(1, 3, 1, 1)
    inner = tiny_wrn.conv1((x - mean) / std)
    assert torch.allclose(tiny_wrn.conv1(tiny_wrn.normalize(x)), inner)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_normalisation_constants_are_the_released_full_precision_ones(num_classes):
    norm = WideResNet(10, 1, num_classes).normalize  # CIFAR-100 models use the CIFAR-10 statistics too
    assert norm.mean.dtype == norm.std.dtype == torch.float64
    assert norm.mean.flatten().tolist() == list(RELEASED_MEAN)  # exact float64 equality
    assert norm.std.flatten().tolist() == list(RELEASED_STD)


def test_normalisation_computes_in_the_input_dtype():
    norm = WideResNet(10, 1).normalize
    x64 = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    out = norm(x64)
    assert out.dtype == torch.float64
    mean = torch.tensor(RELEASED_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(RELEASED_STD, dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.equal(out, (x64 - mean) / std)
    x32 = x64.float()
    assert norm(x32).dtype == torch.float32
    assert torch.equal(norm(x32), (x32 - mean.float()) / std.float())
    assert norm(x64.bfloat16()).dtype == torch.bfloat16


def test_build_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="model.arch"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="model.depth"):
        WideResNet(depth=11)


def test_resnet50_shape():
    model = build_model("resnet50", 9).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 9)
