"""Typed, frozen configuration loaded from `params.yaml`.

`params.yaml` is the single source of truth. Its layout is

    profile: quick            # which profile the pipeline runs
    data_root: ""             # "" -> $DUALAT_DATA, else data/raw
    <profile>:                # paper | quick | proxy, all with the same keys
      <dataset>:              # cifar10 | cifar100 | rin
        data: ...             # one section per pipeline stage
        model: ...
        stage1: ...
        ...

`load(path, dataset=..., profile=...)` returns a `Config`; every section is a frozen dataclass.
An unknown key, a missing key or an impossible value stops with a `ConfigError` that names the
dotted key and the value, e.g. ``stage2.sampler.step_size must be > 0, got -0.1``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("paper", "quick", "proxy", "paper_t50")
DATASETS = ("cifar10", "cifar100", "rin")
METHODS = ("standard_at", "ratio", "dualat")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "rin": 9}
# Profiles that cover only some datasets; the others run through every stage as "not computed".
PROFILE_DATASETS = {"proxy": ("cifar10",)}
# The auxiliary OOD sources p_ood (`data.ood`; docs/data.md)
OOD_SOURCES = ("tiny_images", "tiny_images_300k", "tinyimagenet32", "imagenet_od", "noise")
# OOD test sets of Tables 10-12 (`evaluate.ood_sets`); "tinyimagenet32" is the offline stand-in.
OOD_SETS = ("cifar10", "cifar100", "svhn", "tinyimagenet32", "imagenet_od", "noise")


class ConfigError(ValueError):
    """A key or value of params.yaml is wrong; the message names it."""


# --- value checks, attached to fields as metadata ------------------------------------------------


def _check(pred: Callable[[Any], bool], text: str) -> dict:
    return {"check": (pred, text)}


def positive() -> dict:
    return _check(lambda v: v > 0, "must be > 0")


def nonneg() -> dict:
    return _check(lambda v: v >= 0, "must be >= 0")


def unit() -> dict:
    return _check(lambda v: 0 <= v <= 1, "must be in [0, 1]")


def one_of(*allowed: str) -> dict:
    return _check(lambda v: v in allowed, f"must be one of {', '.join(allowed)}")


def all_in(*allowed: str) -> dict:
    return _check(lambda v: all(x in allowed for x in v), f"must hold only values of {', '.join(allowed)}")


def all_positive() -> dict:
    return _check(lambda v: all(x > 0 for x in v), "must hold only values > 0")


# --- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(metadata=one_of(*DATASETS))
    num_classes: int = field(metadata=positive())
    image_size: int = field(metadata=positive())
    # p_ood (docs/data.md): tiny_images = 80M Tiny Images (the paper's, CIFAR), tiny_images_300k =
    # Outlier Exposure's 300K subset, tinyimagenet32 = Tiny-ImageNet 32x32, imagenet_od (RIN), noise
    ood: str = field(metadata=one_of(*OOD_SOURCES))
    n_train: int = field(metadata=nonneg())  # 0 = the whole training set
    n_test: int = field(metadata=nonneg())  # 0 = the whole test set
    n_ood: int = field(metadata=nonneg())  # 0 = the whole p_ood source
    rin_balance: bool  # RestrictedImageNet: class-balanced sampling of the 9 super-classes
    workers: int = field(metadata=nonneg())
    # 80M Tiny Images records to skip when `ood` is tiny_images (the CIFAR near-duplicate list):
    # "" = none; a relative path lies under the data root; used when the file is present.
    ood_exclude: str = ""


@dataclass(frozen=True)
class ModelConfig:
    arch: str = field(metadata=one_of("wrn", "resnet50"))
    depth: int = field(metadata=positive())  # WRN depth, 6n+4 (34 in the paper)
    widen_factor: int = field(metadata=positive())  # WRN width k (10 in the paper)


@dataclass(frozen=True)
class AttackConfig:
    """L2 PGD. `variant`: "ratio" = zero start, momentum on the L1-normalised gradient, best
    iterate (the RATIO code's attack, in- and out-distribution); "plain" = zero start, normalised
    gradient step, last iterate (the released Dual-AT code's attack). Both project with
    torch.renorm's rule (dualat.attacks.project_l2)."""

    eps: float = field(metadata=positive())
    step_size: float = field(metadata=positive())
    steps: int = field(metadata=nonneg())
    variant: str = field(metadata=one_of("ratio", "plain"))
    momentum: float = field(metadata=unit())


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(metadata=positive())
    momentum: float = field(metadata=unit())
    nesterov: bool
    weight_decay: float = field(metadata=nonneg())
    schedule: str = field(metadata=one_of("cosine", "step", "constant"))
    milestones: tuple[int, ...] = field(  # epochs of the step schedule, increasing
        metadata=_check(lambda v: all(m > 0 for m in v) and list(v) == sorted(set(v)), "must be increasing epochs > 0")
    )
    gamma: float = field(metadata=positive())  # step-schedule factor


@dataclass(frozen=True)
class EMAConfig:
    enabled: bool
    decay: float = field(metadata=unit())
    warmup: bool  # decay_n = min(decay, (1 + n) / (10 + n))


@dataclass(frozen=True)
class Stage1Config:
    """Robust discriminative pre-training (BN in train mode), L_AT-CE only. Also the RATIO
    baseline when `ood_weight` > 0 (Eq. 13)."""

    epochs: int = field(metadata=positive())
    batch_size: int = field(metadata=positive())
    optim: OptimConfig
    ema: EMAConfig
    attack: AttackConfig
    eval_every_epochs: int = field(metadata=positive())
    eval_n: int = field(metadata=nonneg())  # test images for the PGD robust accuracy; 0 = all
    seed: int


@dataclass(frozen=True)
class RatioConfig:
    """RATIO's loss, at_weight * L_AT-CE + lam * CE(U, p(y|x'_ood)), x'_ood attacked within eps_o.

    Eq. 13 (text): at_weight 1, lam 1. The released training (InNOutRobustness' AdversarialACET,
    REFERENCE.md 'Measured against the released code'): 0.5 * L_AT-CE + 0.5 * KL(U || p(y|x'_ood)),
    i.e. at_weight 0.5, lam 0.5 (KL(U || p) = CE(U, p) - log K: the same gradient)."""

    at_weight: float = field(metadata=positive())  # weight of L_AT-CE in RATIO's loss only
    lam: float = field(metadata=nonneg())  # weight of the OOD term (Eq. 13's lambda)
    ood_attack: AttackConfig
    ood_augmentation: str = field(metadata=one_of("classification", "generative"))


@dataclass(frozen=True)
class SamplerConfig:
    """Contrastive sampling of stage 2 (Algorithm 1, Eq. 8 ancestral form) and its curriculum."""

    step_size: float = field(metadata=positive())  # eta
    T_max: int = field(metadata=nonneg())  # Table 5: 45 (CIFAR) / 18 (RIN); released CIFAR runs: 50
    curriculum: str = field(metadata=one_of("auc", "loss"))
    auc_threshold: float = field(metadata=unit())  # raise T when mean AUC >= this
    auc_window_images: int = field(metadata=positive())  # history of ceil(window / B) batches
    loss_threshold: float = field(metadata=positive())  # "loss" rule: raise T when L_BCE < this
    bce_reduction: str = field(metadata=one_of("mean_2b", "sum_of_means"))
    augmentation: str = field(metadata=one_of("none", "flip", "crop_flip", "autoaugment"))
    # batches between a raise of T and its use: 0 = next batch (code; one host sync per step),
    # 1 = overlap-friendly, no sync. params.yaml must still name it (every key is required).
    curriculum_lag: int = field(default=1, metadata=_check(lambda v: v in (0, 1), "must be 0 or 1"))


@dataclass(frozen=True)
class Stage2Config:
    images: int = field(metadata=positive())  # training budget in images seen
    batch_size: int = field(metadata=positive())
    init: str = field(metadata=one_of("ema", "plain"))  # which stage-1 weights to start from
    optim: OptimConfig
    ema: EMAConfig
    attack: AttackConfig
    sampler: SamplerConfig
    eval_every_images: int = field(metadata=positive())
    eval_fid_samples: int = field(metadata=nonneg())  # 0 = no FID during training
    eval_n: int = field(metadata=nonneg())
    ablation_kinds: tuple[str, ...] = field(
        metadata=all_in("none", "flip", "crop_flip", "autoaugment")
    )  # Figure 2: L_BCE augmentations compared (CIFAR-10)
    ablation_images: int = field(metadata=positive())  # training budget of each ablation run
    fused: bool  # share forward/backward passes between the AT attack and the sampler
    amp_bf16: bool
    channels_last: bool
    seed: int


@dataclass(frozen=True)
class MethodSteps:
    standard_at: int = field(metadata=nonneg())
    ratio: int = field(metadata=nonneg())
    dualat: int = field(metadata=nonneg())


@dataclass(frozen=True)
class MethodCheckpoints:
    """A file evaluated instead of a method's trained model ("" = the pipeline's own model)."""

    standard_at: str
    ratio: str
    dualat: str


@dataclass(frozen=True)
class SampleConfig:
    """Test-time generation (Eq. 14 conditional, Eq. 8 unconditional; Table 8)."""

    step_size: float = field(metadata=positive())
    steps: MethodSteps
    steps_grid: tuple[int, ...] = field(metadata=all_positive())  # Table 8 grid search over T
    n_samples: int = field(metadata=positive())  # FID/IS sample count (50K in the paper)
    n_grid_samples: int = field(metadata=positive())  # samples per grid point
    fid_ref_n: int = field(metadata=nonneg())  # training images for the reference stats; 0 = all
    batch_size: int = field(metadata=positive())
    # FID as the paper's released code computed it (legacy_pytorch) or clean-fid's "clean" mode
    fid_mode: str = field(metadata=one_of("legacy_pytorch", "clean"))
    fid_weights: str  # the mode's network weights; "" = its default lookup (metrics.fid_weights)
    # a second FID mode computed from the same samples (its weights: the mode's default lookup); "" = none
    fid_second_mode: str = field(metadata=one_of("", "legacy_pytorch", "clean"))
    is_weights: str  # pytorch-fid's 1008-class Inception (.pth) for the Inception Score; "" = none
    seeds: tuple[int, ...] = field(metadata=_check(lambda v: len(v) >= 1, "must hold at least one seed"))
    selection_seed: int  # draws the held-out seed images of training-time FID and Table 8's grid
    kid_subsets: int = field(metadata=positive())
    kid_subset_size: int = field(metadata=_check(lambda v: v >= 2, "must be >= 2"))


@dataclass(frozen=True)
class EvaluateConfig:
    autoattack_eps: float = field(metadata=positive())
    autoattack_version: str = field(metadata=one_of("standard", "plus", "rand"))
    autoattack_n: int = field(metadata=nonneg())  # 0 = whole test set
    pgd: AttackConfig
    batch_size: int = field(metadata=positive())
    ece_bins: int = field(metadata=positive())
    ood_n: int = field(metadata=positive())  # OOD images per set (1024 in the paper)
    ood_attack: AttackConfig
    ood_sets: tuple[str, ...] = field(metadata=all_in(*OOD_SETS))
    cf_eps: tuple[float, ...] = field(metadata=all_positive())  # counterfactual eps grid
    cf_steps: int = field(metadata=positive())
    cf_step_factor: float = field(metadata=positive())  # step size = factor * eps / steps
    cf_n: int = field(metadata=positive())  # training images turned into counterfactuals
    seed: int  # also draws the OOD test images (ood_n of each set, uniformly over the set)
    checkpoints: MethodCheckpoints  # released / own files evaluated instead of trained models


@dataclass(frozen=True)
class ComputeConfig:
    """How the training and evaluation stages run: one process, or torchrun's processes on every
    GPU (docs/gpus.md). Not part of a run's identity: batch sizes are global, split evenly."""

    # processes per node (torchrun's --nproc-per-node): "auto" = one per visible GPU, 1 without
    # CUDA; an integer N > 1 without CUDA runs N CPU processes (gloo), as the tests do
    nproc_per_node: int | str = field(
        metadata=_check(lambda v: v == "auto" or (isinstance(v, int) and v >= 1), "must be auto or an integer >= 1")
    )
    nnodes: int = field(metadata=positive())  # machines; > 1 needs rdzv_endpoint
    rdzv_endpoint: str  # host:port of the rendezvous on the first node ("" = this machine only)


@dataclass(frozen=True)
class Config:
    profile: str
    data_root: str
    data: DataConfig
    model: ModelConfig
    stage1: Stage1Config
    ratio: RatioConfig
    stage2: Stage2Config
    sample: SampleConfig
    evaluate: EvaluateConfig
    compute: ComputeConfig


SECTIONS: dict[str, type] = {
    name: tp for name, tp in typing.get_type_hints(Config).items() if name not in ("profile", "data_root")
}


# --- building dataclasses from dicts with named errors --------------------------------------------


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):  # the first alternative that takes the value
        errors = []
        for alternative in typing.get_args(tp):
            try:
                return _coerce(value, alternative, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(" or ".join(errors))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, str) and _is_number(value) and not _bare_float(value):
        raise ConfigError(f"{key} is the string {value!r}: remove the quotes (write {value.strip()})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _is_number(value):  # YAML 1.1 reads 1e-3 (no dot) as a string
            raise ConfigError(
                f"{key} is the string {value!r}: YAML needs a dot in the mantissa, write {_yaml_float(value)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation for {key}: {tp}")


def _bare_float(text: str) -> bool:
    """True where YAML 1.1 reads the unquoted text as a string although it is a number (1e-3)."""
    return "e" in text.lower() and "." not in text.lower().partition("e")[0]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _yaml_float(text: str) -> str:
    """'1e-3' -> '1.0e-3': the spelling YAML reads as a float."""
    mantissa, _, exponent = text.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build the frozen dataclass `cls` from a dict, checking keys, types and values."""
    where = prefix or cls.__name__
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key {key} (allowed: {', '.join(fields)})")
    missing = [n for n in fields if n not in raw]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(f"missing key {key}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(raw[name], hints[name], key)
        if "check" in f.metadata:
            pred, text = f.metadata["check"]
            if not pred(value):
                raise ConfigError(f"{key} {text}, got {raw[name]!r}")
        values[name] = value
    return cls(**values)


# --- loading --------------------------------------------------------------------------------------


def read_params(path: str | Path = "params.yaml") -> dict:
    """The raw params.yaml (or the same tree as .json) as a dict (no validation)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the repository root or pass path=")
    if path.suffix == ".json":  # a params.json written from params.yaml, for machines without PyYAML
        return json.loads(path.read_text())
    import yaml  # lazy: a machine without PyYAML reads a params.json and never gets here

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConfigError(
                        f"{path}: key {key!r} is written twice in one block (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); delete one"
                    )
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    with path.open() as fh:
        return yaml.load(fh, Loader=UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = node[p]
    if leaf not in node:
        raise ConfigError(f"override {dotted}: unknown key {leaf}")
    node[leaf] = value


def load(
    path: str | Path = "params.yaml",
    *,
    dataset: str = "cifar10",
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load and validate the config of one dataset under one profile.

    `profile` None takes params.yaml's `profile` key. `overrides` maps dotted keys inside the
    dataset block (e.g. ``{"stage2.sampler.step_size": 0.05}``) to new values.
    """
    params = read_params(path)
    profile = profile or params.get("profile")
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    try:
        block = copy.deepcopy(params[profile][dataset])
    except (KeyError, TypeError):
        raise ConfigError(f"params.yaml has no section {profile}.{dataset}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(block, dotted, value)
    unknown = sorted(set(block) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]} in {profile}.{dataset} (allowed: {', '.join(SECTIONS)})")
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in block:
            raise ConfigError(f"missing key {profile}.{dataset}.{name}")
        sections[name] = build(cls, block[name], name)
    data_root = params.get("data_root", "")
    if not isinstance(data_root, str):
        raise ConfigError(f"data_root must be a string, got {data_root!r}")
    cfg = Config(profile=profile, data_root=data_root, **sections)
    check(cfg, dataset)
    return cfg


def check(cfg: Config, dataset: str) -> None:
    """Checks between keys, at load time (before any data is read or any model is built)."""
    where = f"{cfg.profile}.{dataset}"
    if cfg.data.dataset != dataset:
        raise ConfigError(
            f"{where}.data.dataset must be {dataset!r} inside the {dataset} block, got {cfg.data.dataset!r}"
        )
    if cfg.data.num_classes != NUM_CLASSES[dataset]:
        raise ConfigError(
            f"{where}.data.num_classes is {cfg.data.num_classes} but {dataset} has {NUM_CLASSES[dataset]} classes"
        )
    if cfg.data.ood == "noise" and cfg.data.n_ood == 0:
        raise ConfigError(f"{where}.data.n_ood must be > 0 when data.ood is noise (noise has no size of its own)")
    model = cfg.model
    if model.arch == "wrn" and (model.depth < 10 or (model.depth - 4) % 6):
        raise ConfigError(
            f"{where}.model.depth must be 6n+4 for a WideResNet (10, 16, 22, 28, 34, ...), got {model.depth}"
        )
    if model.arch == "resnet50" and model.depth != 50:
        raise ConfigError(f"{where}.model.depth must be 50 for arch resnet50, got {model.depth}")
    if cfg.compute.nnodes > 1 and not cfg.compute.rdzv_endpoint:
        raise ConfigError(
            f"{where}.compute.rdzv_endpoint must be host:port of the first node when compute.nnodes is "
            f"{cfg.compute.nnodes} (torchrun's --rdzv-endpoint)"
        )
    if cfg.compute.nproc_per_node != "auto":  # "auto" is checked at launch, where the GPUs are known
        check_world(cfg, dataset, world_size(cfg.compute))
    for method in METHODS:  # "released:<name>" must name a registered released checkpoint
        value = getattr(cfg.evaluate.checkpoints, method)
        if value.startswith("released:"):
            from dualat.released import REGISTRY  # lazy: config is imported by everything

            if value.split(":", 1)[1] not in REGISTRY:
                raise ConfigError(
                    f"{where}.evaluate.checkpoints.{method} names no released checkpoint: {value!r} "
                    f"(known: {', '.join(sorted(REGISTRY))}; python -m dualat.released list)"
                )
    late = [m for m in cfg.stage1.optim.milestones if m >= cfg.stage1.epochs]
    if late:
        raise ConfigError(
            f"{where}.stage1.optim.milestones must be epochs below stage1.epochs ({cfg.stage1.epochs}), got {late[0]}"
        )


def world_size(compute: ComputeConfig, gpus: int | None = None) -> int:
    """Processes over all nodes: nproc_per_node x nnodes, "auto" being `gpus` (default: the visible
    CUDA devices) or 1 without any."""
    per_node = compute.nproc_per_node
    if per_node == "auto":
        if gpus is None:
            import torch  # lazy: loading a config needs no torch unless "auto" must be resolved

            gpus = torch.cuda.device_count()
        per_node = max(gpus, 1)
    return per_node * compute.nnodes


def check_world(cfg: Config, dataset: str, world: int) -> None:
    """Stop when a global batch of `cfg` cannot be split evenly over `world` processes."""
    for key in ("stage1.batch_size", "stage2.batch_size"):
        section, name = key.split(".")
        batch = getattr(getattr(cfg, section), name)
        if batch % world:
            raise ConfigError(
                f"{cfg.profile}.{dataset}.{key} is {batch}, the global batch, and must split evenly over the "
                f"{world} processes of compute (nproc_per_node {cfg.compute.nproc_per_node} x nnodes "
                f"{cfg.compute.nnodes}): use a multiple of {world} or fewer processes"
            )


def from_dict(raw: dict) -> Config:
    """The `Config` of `to_dict(cfg)` (a checkpoint's or a launched process's settings); a dict
    written before `compute` existed runs in one process."""
    raw = copy.deepcopy(raw)
    raw.setdefault("compute", {"nproc_per_node": 1, "nnodes": 1, "rdzv_endpoint": ""})
    sections = {name: build(cls, raw[name], name) for name, cls in SECTIONS.items()}
    return Config(profile=raw["profile"], data_root=raw["data_root"], **sections)


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config (for records and checkpoints)."""
    return dataclasses.asdict(cfg)
