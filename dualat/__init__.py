"""dualat: Joint Discriminative-Generative Modeling via Dual Adversarial Training (Dual-AT).

Importing the package is cheap and does no I/O; submodules load on first use:
`dualat.config`, `dualat.data`, `dualat.models`, `dualat.attacks`, `dualat.sampling`,
`dualat.losses`, `dualat.train`, `dualat.metrics`, `dualat.checkpoint`.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "artifacts", "attacks", "bookkeeping", "checkpoint", "config", "curriculum", "data", "datasets", "ema", "energy", "evaluation",
    "explore", "fid_reference", "fid_weights", "generate", "losses", "metrics", "model_io", "models", "paper_values", "preflight", "progress", "protocol", "proxy",
    "records", "released", "reports", "runs", "sampling", "stages", "train", "views",
}  # fmt: skip


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dualat' has no attribute {name!r}")
