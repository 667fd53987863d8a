"""Models of a `Config`: build one, load a checkpoint (this project's or a released state dict),
and say which checkpoint of a method is the reported one and why.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dualat import checkpoint
from dualat.artifacts import model_dir
from dualat.checkpoint import CheckpointError
from dualat.config import Config, ConfigError
from dualat.models import build_model, load_released, strip_prefixes
from dualat.records import atomic_open

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
    external = getattr(cfg.evaluate.checkpoints, _checked(method))
    if external:  # "released:<name>" is resolved (hash-checked, downloaded where possible) by `released`
        from dualat import released  # lazy: released imports the evaluation code

        return Path(
            released.resolve_checkpoint(external)
        ), f"external checkpoint {external} (evaluate.checkpoints.{method})"
    return trained_model(cfg, method)


def _checked(method: str) -> str:
    """`method` when it names a method (the notebooks' `method` parameter), else ConfigError."""
    if method not in METHOD_STAGE:
        raise ConfigError(f"method must be one of {', '.join(METHOD_STAGE)}, got {method!r}")
    return method


def trained_model(cfg: Config, method: str) -> tuple[Path, str]:
    """The checkpoint training selected for `method` and why (stage 2 starts from standard_at's).

    standard_at / ratio: best.pt (best PGD robust test accuracy). dualat: best_fid.pt (best FID
    during training), or final.pt when `stage2.eval_fid_samples` is 0 (no FID, so no selection).
    """
    folder = model_dir(cfg.data.dataset, _checked(method))
    if method == "dualat" and cfg.stage2.eval_fid_samples == 0:
        return folder / "final.pt", "final.pt: stage2.eval_fid_samples is 0, so no best-FID checkpoint exists"
    why = "best FID during training" if method == "dualat" else "best PGD robust accuracy during training"
    return folder / SELECTED[method], f"{SELECTED[method]}: {why}"


def new_model(cfg: Config) -> nn.Module:
    """A freshly initialised model of `cfg.model` for `cfg.data.num_classes` classes, on `device()`."""
    return build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.depth, cfg.model.widen_factor).to(device())


def load_model(cfg: Config, path: str | Path, weights: str = "selected", *, source: str | None = None) -> nn.Module:
    """A model in eval mode from a checkpoint of this project or any state dict.

    `weights`: "selected" = the weights the run selected (EMA weights where the run used EMA),
    "ema" (refused when the file holds none), or "plain" (the trained, non-EMA weights).
    Project checkpoints: best*.pt / final.pt hold "model" (selected) and "plain"; last.pt holds
    "model" (plain) and "ema". Other files: a state dict, or one wrapped as {"state_dict": ...}
    or {"model": ...}, with the prefixes of `models.strip_prefixes` removed; then only "selected"
    or "plain" make sense and both mean the file's weights. `source`: where a user's file name
    came from (e.g. "evaluate.checkpoints.dualat"), for the messages of `checkpoint.load`.
    CheckpointError (one line) for a missing, foreign or unsafe file or another architecture.
    """
    if weights not in ("selected", "ema", "plain"):
        raise ValueError(f"weights must be selected, ema or plain, got {weights!r}")
    state_dict = _weights_of(checkpoint.load(path, source=source), weights, Path(path))
    model = new_model(cfg)
    try:
        load_released(model, state_dict)
    except RuntimeError as e:
        check_architecture(cfg, path, state_dict, strict=True)
        lines = str(e).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path} holds {architecture(state_dict)} but its tensors differ: {detail}") from None
    return model.eval()


def check_file(cfg: Config, path: str | Path, source: str) -> None:
    """Before any work: a user's checkpoint file (its name from `source`, e.g.
    "evaluate.checkpoints.dualat") exists, is a PyTorch checkpoint and holds the network and class
    count of params.yaml. A cheap read (weights_only, tensors memory-mapped); CheckpointError."""
    state = checkpoint.load(path, source=source, mmap=True)
    check_architecture(cfg, path, _weights_of(state, "selected", Path(path)))


def check_external(cfg: Config, method: str) -> None:
    """`check_file` on the file of `evaluate.checkpoints.<method>`, when one is set."""
    if getattr(cfg.evaluate.checkpoints, _checked(method)):  # "released:<name>" as its file
        check_file(cfg, selected_model(cfg, method)[0], f"evaluate.checkpoints.{method}")


def wanted(cfg: Config) -> str:
    """The architecture params.yaml asks for, as `architecture` writes it: "WRN-10-1, 10 classes"."""
    net = "ResNet-50" if cfg.model.arch == "resnet50" else f"WRN-{cfg.model.depth}-{cfg.model.widen_factor}"
    return f"{net}, {cfg.data.num_classes} classes"


def check_architecture(cfg: Config, path: str | Path, state_dict: dict, strict: bool = False) -> None:
    """CheckpointError when the shapes of `state_dict` say another network or class count than
    params.yaml (`wanted`); an unknown network passes unless `strict` (the strict load decides)."""
    found = architecture(state_dict)
    if found == wanted(cfg):
        return
    same_classes = found.endswith((f", {cfg.data.num_classes} classes", "unknown class count"))
    if found.startswith("an unknown") and same_classes and not strict:
        return  # a network this reading does not know: the strict load decides
    raise CheckpointError(f"{path} holds {found}; params.yaml ({cfg.profile}.{cfg.data.dataset}) wants {wanted(cfg)}")


def architecture(state_dict: dict) -> str:
    """The network a state dict holds, read off its tensor names and shapes: "WRN-16-4, 10
    classes" (depth 6n+4 from n blocks per group, width from block1's channels / 16),
    "ResNet-50, 1000 classes" (bottleneck blocks per layer), else "an unknown network (N tensors)"."""
    sd = {k.removeprefix("net."): v for k, v in strip_prefixes(state_dict).items()}
    fc = sd.get("fc.weight")
    classes = f", {fc.shape[0]} classes" if fc is not None and fc.dim() == 2 else ", unknown class count"
    if "block1.layer.0.conv1.weight" in sd:
        n = len({k.split(".")[2] for k in sd if k.startswith("block1.layer.")})
        return f"WRN-{6 * n + 4}-{sd['block1.layer.0.conv1.weight'].shape[0] // 16}{classes}"
    blocks = [len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4)]
    if all(blocks) and "layer1.0.conv3.weight" in sd:
        return f"ResNet-{3 * sum(blocks) + 2}{classes}"
    return f"an unknown network ({len(sd)} tensors){classes}"


def _weights_of(state: dict, weights: str, path: Path) -> dict:
    """The state dict asked for by `weights` inside a loaded checkpoint (see `load_model`)."""
    if "optimizer" in state and "ema" in state:  # a resumable last.pt of this project
        uses_ema = state["ema"] is not None
        if weights == "ema" or (weights == "selected" and uses_ema):
            if not uses_ema:
                raise CheckpointError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
            return state["ema"]["module"]
        return state["model"]
    if "plain" in state and "model" in state:  # best*.pt / final.pt of this project
        if weights == "ema" and not state.get("ema", True):
            raise CheckpointError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
        return state["plain"] if weights == "plain" else state["model"]
    if weights == "ema":
        raise CheckpointError(f"{path} is a plain state dict; it has no separate EMA weights")
    for wrapper in ("state_dict", "model"):  # {"state_dict": {...}} and similar wrappers
        if isinstance(state.get(wrapper), dict):
            return state[wrapper]
    return state


# --- safetensors export (model cards, reports/models/) -----------------------------------------------


def selected_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights a checkpoint of this project (or a released state dict) holds for evaluation,
    prefixes stripped (`load_model`'s "selected" weights), as plain contiguous CPU tensors."""
    state = checkpoint.load(path)
    return {
        k: v.detach().cpu().contiguous() for k, v in strip_prefixes(_weights_of(state, "selected", Path(path))).items()
    }


def normalisation_text(cfg: Config) -> str:
    """How inputs are normalised by `cfg`'s model: the constants live in `forward`, not in the weights."""
    norm = build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.depth, cfg.model.widen_factor).normalize
    mean, std = (tuple(float(v) for v in t.flatten()) for t in (norm.mean, norm.std))
    return (
        f"inputs in [0, 1], NCHW; forward applies (x - mean) / std with mean {mean}, std {std}; not in the state dict"
    )


def _arch_tag(cfg: Config) -> str:
    """The architecture as safetensors metadata names it, e.g. "wrn-34-10"."""
    return f"{cfg.model.arch}-{cfg.model.depth}-{cfg.model.widen_factor}"


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path, cfg: Config) -> Path:
    """Write a plain state dict as safetensors (atomically) with metadata: architecture, classes,
    normalisation (`normalisation_text`). Read back with `load_safetensors`."""
    from safetensors.torch import save  # lazy: only the report stage exports

    metadata = {
        "architecture": _arch_tag(cfg),
        "num_classes": str(cfg.data.num_classes),
        "dataset": cfg.data.dataset,
        "normalisation": normalisation_text(cfg),
        "loader": "dualat.model_io.load_safetensors(cfg, path)",
    }
    with atomic_open(path, "wb") as fh:
        fh.write(save(state_dict, metadata=metadata))
    return Path(path)


def load_safetensors(cfg: Config, path: str | Path) -> nn.Module:
    """A model of `cfg` in eval mode from a safetensors file written by `save_safetensors` (or any
    safetensors state dict of the same layout); strict load; a one-line error names a mismatch."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} not found")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    ours, k = _arch_tag(cfg), str(cfg.data.num_classes)
    if (meta.get("architecture", ours), meta.get("num_classes", k)) != (ours, k):
        raise ValueError(
            f"{path} holds a {meta['architecture']} model with {meta['num_classes']} classes; "
            f"params.yaml ({cfg.profile}.{cfg.data.dataset}) wants {ours} with {cfg.data.num_classes} classes"
        )
    model = new_model(cfg)
    try:
        load_released(model, load_file(str(path), device="cpu"))
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit {ours}: {str(err).splitlines()[0]}") from None
    return model.eval()
