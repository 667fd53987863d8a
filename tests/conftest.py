import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_wrn():
    """A WRN-10-1 (78K parameters) in eval mode: fast on the CPU, real BN layers."""
    from dualat.models import WideResNet

    torch.manual_seed(0)
    return WideResNet(depth=10, widen_factor=1, num_classes=10)


def shared_data_root():
    return SHARED_DATA if (SHARED_DATA / "cifar10_test_00.npz").exists() else None
