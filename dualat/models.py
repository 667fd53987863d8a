"""Classifiers f(x) -> logits (B, K) on images in [0, 1]; the normalisation is inside `forward`.

WideResNet-34-10 follows the layout of the released RATIO / Dual-AT CIFAR checkpoints (see
`shared/wrn3410_state_dict_layout.json`): pre-activation basic blocks, bias-free convolutions,
groups `block1..3` of `layer.{i}` with `bn1, conv1, bn2, conv2` and `convShortcut` where the width
changes, then `bn1` and `fc`. The normalisation constants are non-persistent float64 buffers, so
the state dict holds exactly the 191 released entries and a strict load works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# CIFAR-10 training-set statistics at full precision, as the released models use them, also for
# CIFAR-100 (REFERENCE.md, 'Measured against the released code'; the four-digit rounding
# (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) moves released logits by ~4e-4 relative).
CIFAR_MEAN = (0.4913997551666284, 0.48215855929893703, 0.4465309133731618)
CIFAR_STD = (0.24703225141799082, 0.24348516474564, 0.26158783926049628)
# torchvision's ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Prefixes that saved files put in front of the model's own keys.
_PREFIXES = ("module.module.", "base_model.", "module.", "model.")


class Normalize(nn.Module):
    """(x - mean) / std per channel, computed in the dtype of x; constants are not part of the
    state dict. They are kept in float64 and rounded to the input's dtype at use, so a float64
    input is normalised with the full-precision constants and a float32 input exactly as before."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        # A 1x1 projection where the shape changes; it sees the pre-activated input.
        self.convShortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False) if c_in != c_out or stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(o)
        out = self.conv1(o)
        out = self.conv2(F.relu(self.bn2(out)))
        return shortcut + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016) for 32x32 inputs; WRN-34-10 has 46,160,474
    parameters with 10 classes. Input (B, 3, H, W) in [0, 1]; output logits (B, K)."""

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        mean: tuple[float, ...] = CIFAR_MEAN,
        std: tuple[float, ...] = CIFAR_STD,
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"model.depth must be 6n+4 (e.g. 10, 16, 28, 34), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = 8x8 average pool at 32x32
        return self.fc(out)


class NormalizedResNet50(nn.Module):
    """torchvision's ResNet-50 with the ImageNet normalisation in front; 224x224 inputs."""

    def __init__(self, num_classes: int = 9):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        from torchvision.models import resnet50  # lazy: ~1.3 s to import, needless without data

        self.net = resnet50(num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(arch: str, num_classes: int, depth: int = 34, widen_factor: int = 10) -> nn.Module:
    """The classifier named by `model.arch` ("wrn" or "resnet50")."""
    if arch == "wrn":
        return WideResNet(depth, widen_factor, num_classes)
    if arch == "resnet50":
        return NormalizedResNet50(num_classes)
    raise ValueError(f"model.arch must be 'wrn' or 'resnet50', got {arch!r}")


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the `module.`/`base_model.`/`module.module.` prefixes of saved files and the
    `n_averaged` entry of torch's AveragedModel (EMA) dicts."""
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key == "n_averaged":
            continue
        out[key] = value
    return out


def load_released(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Strictly load a released RATIO / Dual-AT state dict (prefixes stripped) into `model`."""
    model.load_state_dict(strip_prefixes(state), strict=True)
    return model
