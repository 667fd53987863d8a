"""Augmentation pipelines of the paper's Table 6 (torchvision v1 transforms).

Each pipeline takes an RGB PIL image and returns a float tensor (3, H, W) in [0, 1]: (3, 32, 32)
for CIFAR and (3, 224, 224) for RestrictedImageNet ("rin"). All randomness comes from torch's
global RNG, so dualat.data.streams can make it reproducible per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

TRANSFORM_DATASETS = ("cifar10", "cifar100", "rin")  # pipelines exist for these
GENERATIVE_KINDS = ("none", "flip", "crop_flip", "autoaugment")
RIN_SIZE, RIN_RESIZE = 224, 256  # RIN train crop / test resize (then centre crop)
CIFAR_PAD = 4
CUTOUT_SIZE = 16  # px, CIFAR L_AT-CE
LIGHTING_STD = 0.05  # RIN L_AT-CE
JITTER = 0.1  # RIN L_AT-CE: brightness, contrast, saturation
# The RATIO code pads RandomCrop and fills AutoAugment with the CIFAR-10 mean colour; the paper
# does not say. Default fill 0 (black); pass fill=RATIO_CIFAR_FILL for the code's choice.
RATIO_CIFAR_FILL = (125, 122, 113)

Fill = int | tuple[int, int, int]


class Cutout:
    """Zero one size x size square of a (C, H, W) tensor, its centre uniform over the image and
    the square clipped at the borders (DeVries & Taylor 2017, arXiv:1708.04552)."""

    def __init__(self, size: int = CUTOUT_SIZE) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        half = self.size // 2
        out = img.clone()
        out[
            :,
            max(cy - half, 0) : cy - half + self.size,
            max(cx - half, 0) : cx - half + self.size,
        ] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


class Lighting:
    """AlexNet-style PCA lighting noise on a (3, H, W) RGB tensor in [0, 1]: adds the constant
    colour V @ (alpha * lambda), alpha ~ N(0, std^2 I) (Krizhevsky et al. 2012, sec. 4.1).

    The result is clamped to [0, 1] (images stay in [0, 1] everywhere in this project); the RATIO
    code does not clamp: Lighting(std, clamp=False).
    """

    # ImageNet RGB eigenvalues / eigenvectors (columns) as in fb.resnet.torch datasets/imagenet.lua,
    # the values the RATIO code uses too.
    EIGVAL = (0.2175, 0.0188, 0.0045)
    EIGVEC = (
        (-0.5675, 0.7192, 0.4009),
        (-0.5808, -0.0045, -0.8140),
        (-0.5836, -0.6948, 0.4203),
    )

    def __init__(self, std: float = LIGHTING_STD, clamp: bool = True) -> None:
        self.std, self.clamp = std, clamp

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = torch.tensor(self.EIGVEC) @ (alpha * torch.tensor(self.EIGVAL))  # (3,)
        out = img + rgb.to(img.dtype).view(3, 1, 1)
        return out.clamp_(0, 1) if self.clamp else out

    def __repr__(self) -> str:
        return f"Lighting(std={self.std}, clamp={self.clamp})"


def _family(dataset: str) -> str:
    if dataset not in TRANSFORM_DATASETS:
        raise ValueError(f"dataset must be one of {TRANSFORM_DATASETS}, got {dataset!r}")
    return "rin" if dataset == "rin" else "cifar"


def _compose(steps: list[Any]) -> Callable[[Any], torch.Tensor]:
    """Compose PIL steps and end with ToTensor (float, [0, 1])."""
    from torchvision import transforms  # lazy here and below: ~1.3 s to import, needless without data

    return transforms.Compose([*steps, transforms.ToTensor()])


def classification_transform(dataset: str, *, fill: Fill = 0) -> Callable[[Any], torch.Tensor]:
    """Aggressive augmentation for L_AT-CE (Table 6, the RATIO pipelines).

    CIFAR: RandomCrop(32, pad 4) + flip + AutoAugment(CIFAR-10 policy) + ToTensor + Cutout(16).
    RIN: RandomResizedCrop(224) + flip + ColorJitter(0.1, 0.1, 0.1) + ToTensor + Lighting(0.05).
    """
    from torchvision import transforms

    if _family(dataset) == "cifar":
        return transforms.Compose(
            [
                transforms.RandomCrop(32, padding=CIFAR_PAD, fill=fill),
                transforms.RandomHorizontalFlip(),
                transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10, fill=_fill_list(fill)),
                transforms.ToTensor(),
                Cutout(CUTOUT_SIZE),
            ]
        )
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(RIN_SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
            transforms.ToTensor(),
            Lighting(LIGHTING_STD),
        ]
    )


def _fill_list(fill: Fill) -> list[float] | None:
    if fill == 0:
        return None
    return [float(v) for v in fill] if isinstance(fill, tuple) else [float(fill)] * 3


def generative_transform(dataset: str, kind: str = "crop_flip", *, fill: Fill = 0) -> Callable[[Any], torch.Tensor]:
    """Mild augmentation for L_BCE (x_hat and x0); `kind` selects the Figure 2 ablation.

    "crop_flip" (paper): CIFAR RandomCrop(32, pad 4) + flip; RIN RandomResizedCrop(224) + flip.
    "flip": flip only; "none": no augmentation (RIN: Resize(256) + CenterCrop(224) first);
    "autoaugment": the aggressive classification_transform.
    """
    if kind not in GENERATIVE_KINDS:
        raise ValueError(f"kind must be one of {GENERATIVE_KINDS}, got {kind!r}")
    from torchvision import transforms

    family = _family(dataset)
    if kind == "autoaugment":
        return classification_transform(dataset, fill=fill)
    flip = [transforms.RandomHorizontalFlip()] if kind != "none" else []
    if kind == "crop_flip":
        crop = (
            transforms.RandomResizedCrop(RIN_SIZE)
            if family == "rin"
            else transforms.RandomCrop(32, padding=CIFAR_PAD, fill=fill)
        )
        return _compose([crop, *flip])
    fixed = [transforms.Resize(RIN_RESIZE), transforms.CenterCrop(RIN_SIZE)] if family == "rin" else []
    return _compose([*fixed, *flip])


def test_transform(dataset: str, *, resize: bool = False) -> Callable[[Any], torch.Tensor]:
    """Evaluation pipeline: CIFAR ToTensor; RIN Resize(256) + CenterCrop(224) + ToTensor.

    `resize=True` (CIFAR only) first resizes and centre-crops to 32x32, for larger OOD images
    (e.g. ImageNetOD) scored by a CIFAR model.
    """
    from torchvision import transforms

    if _family(dataset) == "rin":
        return _compose([transforms.Resize(RIN_RESIZE), transforms.CenterCrop(RIN_SIZE)])
    return _compose([transforms.Resize(32), transforms.CenterCrop(32)] if resize else [])


test_transform.__test__ = False  # not a pytest test despite its name
