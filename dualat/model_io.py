"""Models of a `Config`: build one, load a checkpoint (this project's or a released state dict),
and say which checkpoint of a method is the reported one and why.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dualat import checkpoint
from dualat.artifacts import model_dir
from dualat.config import Config
from dualat.models import build_model, load_released

METHOD_STAGE = {"standard_at": "stage1", "ratio": "stage1", "dualat": "stage2"}
# The reported model of each method: stage 1 / RATIO by best robust accuracy, Dual-AT by best FID.
SELECTED = {"standard_at": "best.pt", "ratio": "best.pt", "dualat": "best_fid.pt"}


def device() -> torch.device:
    """The current GPU: the first visible one, under torchrun this process's (`distributed.init_from_env`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def selected_model(cfg: Config, method: str) -> tuple[Path, str]:
    """The checkpoint evaluated for `method` and why that one (recorded with every evaluation):
    the file of `evaluate.checkpoints.<method>` when set (a released or one's own checkpoint,
    evaluated instead of the trained model), else `trained_model`."""
    external = getattr(cfg.evaluate.checkpoints, method, "") if method in METHOD_STAGE else ""
    if external:
        return Path(external), f"external checkpoint {external} (evaluate.checkpoints.{method})"
    return trained_model(cfg, method)


def trained_model(cfg: Config, method: str) -> tuple[Path, str]:
    """The checkpoint training selected for `method` and why (stage 2 starts from standard_at's).

    standard_at / ratio: best.pt (best PGD robust test accuracy). dualat: best_fid.pt (best FID
    during training), or final.pt when `stage2.eval_fid_samples` is 0 (no FID, so no selection).
    """
    folder = model_dir(cfg.data.dataset, method)
    if method == "dualat" and cfg.stage2.eval_fid_samples == 0:
        return folder / "final.pt", "final.pt: stage2.eval_fid_samples is 0, so no best-FID checkpoint exists"
    why = "best FID during training" if method == "dualat" else "best PGD robust accuracy during training"
    return folder / SELECTED[method], f"{SELECTED[method]}: {why}"


def new_model(cfg: Config) -> nn.Module:
    """A freshly initialised model of `cfg.model` for `cfg.data.num_classes` classes, on `device()`."""
    return build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.depth, cfg.model.widen_factor).to(device())


def load_model(cfg: Config, path: str | Path, weights: str = "selected") -> nn.Module:
    """A model in eval mode from a checkpoint of this project or any state dict.

    `weights`: "selected" = the weights the run selected (EMA weights where the run used EMA),
    "ema" (refused when the file holds none), or "plain" (the trained, non-EMA weights).
    Project checkpoints: best*.pt / final.pt hold "model" (selected) and "plain"; last.pt holds
    "model" (plain) and "ema". Other files: a state dict, or one wrapped as {"state_dict": ...}
    or {"model": ...}, with the prefixes of `models.strip_prefixes` removed; then only "selected"
    or "plain" make sense and both mean the file's weights.
    """
    if weights not in ("selected", "ema", "plain"):
        raise ValueError(f"weights must be selected, ema or plain, got {weights!r}")
    state = checkpoint.load(path)
    state_dict = _weights_of(state, weights, Path(path))
    model = new_model(cfg)
    try:
        load_released(model, state_dict)
    except RuntimeError:
        saved = _described(state, state_dict)
        ours = f"{cfg.model.arch}-{cfg.model.depth}-{cfg.model.widen_factor}, {cfg.data.num_classes} classes"
        raise ValueError(
            f"{path} holds a {saved} model; params.yaml ({cfg.profile}.{cfg.data.dataset}) wants {ours}"
        ) from None
    return model.eval()


def _weights_of(state: dict, weights: str, path: Path) -> dict:
    """The state dict asked for by `weights` inside a loaded checkpoint (see `load_model`)."""
    if "optimizer" in state and "ema" in state:  # a resumable last.pt of this project
        uses_ema = state["ema"] is not None
        if weights == "ema" or (weights == "selected" and uses_ema):
            if not uses_ema:
                raise ValueError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
            return state["ema"]["module"]
        return state["model"]
    if "plain" in state and "model" in state:  # best*.pt / final.pt of this project
        if weights == "ema" and not state.get("ema", True):
            raise ValueError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
        return state["plain"] if weights == "plain" else state["model"]
    if weights == "ema":
        raise ValueError(f"{path} is a plain state dict; it has no separate EMA weights")
    for wrapper in ("state_dict", "model"):  # {"state_dict": {...}} and similar wrappers
        if isinstance(state.get(wrapper), dict):
            return state[wrapper]
    return state


def _described(state: dict, state_dict: dict) -> str:
    """The architecture a checkpoint was saved with: its saved config, else read off the shapes."""
    saved = state.get("config") if isinstance(state.get("config"), dict) else None
    if saved and "model" in saved and "data" in saved:
        arch = saved["model"]
        return f"{arch['arch']}-{arch['depth']}-{arch['widen_factor']}, {saved['data']['num_classes']} classes"
    fc = next((v for k, v in state_dict.items() if k.endswith("fc.weight")), None)
    classes = f"{fc.shape[0]} classes" if fc is not None else "unknown class count"
    return f"{len(state_dict)}-tensor ({classes}) state-dict"
