"""What a pipeline stage (a notebook) calls: build data, models and streams from a `Config`,
run a training stage, and say `not computed: <reason>` when a data source is missing.

Layout of artifacts (stable paths, no hyperparameters in names):
    data/prepared/<dataset>/   status.json, fid_ref/stats.npz (Inception statistics of the training set)
    models/<dataset>/<method>/ best*.pt, last.pt, final.pt, history.json, status.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualat import distributed
from dualat.config import Config, to_dict
from dualat.records import NotComputed

METHOD_STAGE = {"standard_at": "stage1", "ratio": "stage1", "dualat": "stage2"}
# The reported model of each method: stage 1 / RATIO by best robust accuracy, Dual-AT by best FID.
SELECTED = {"standard_at": "best.pt", "ratio": "best.pt", "dualat": "best_fid.pt"}


def repo_root(start: str | Path = ".") -> Path:
    """The folder holding params.yaml, from `start` upwards (notebooks run from notebooks/)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise FileNotFoundError(f"no params.yaml in {start} or above; open the notebook inside the dualat repository")


def model_dir(dataset: str, method: str) -> Path:
    return Path("models") / dataset / method


def model_path(dataset: str, method: str) -> Path:
    """The checkpoint of `method`'s reported model (relative to the repository root)."""
    return model_dir(dataset, method) / SELECTED[method]


def device() -> torch.device:
    """The current GPU: the first visible one, under torchrun this process's (`distributed.init_from_env`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def root(cfg: Config) -> Path:
    from dualat.data import data_root

    return data_root(cfg.data_root)


# --- data -----------------------------------------------------------------------------------------


def train_set(cfg: Config, transform=None):
    from dualat.data import get_dataset

    kw = {"balance": cfg.data.rin_balance} if cfg.data.dataset == "rin" else {}
    return get_dataset(cfg.data.dataset, "train", root(cfg), transform, n=cfg.data.n_train, **kw)


def test_set(cfg: Config, n: int | None = None):
    from dualat.data import get_dataset, test_transform

    n = cfg.data.n_test if n is None else n
    return get_dataset(
        cfg.data.dataset,
        "test" if cfg.data.dataset != "rin" else "val",
        root(cfg),
        test_transform(cfg.data.dataset),
        n=n,
    )


def ood_set(cfg: Config, transform=None):
    """p_ood, the auxiliary OOD source of stage 2, RATIO and the sample seeds."""
    from dualat.data import get_dataset

    return get_dataset(cfg.data.ood, "train", root(cfg), transform, n=cfg.data.n_ood)


def stack_range(dataset, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items start..stop-1 of a dataset as tensors (B, C, H, W), (B,)."""
    items = [dataset[i] for i in range(start, stop)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def stack(dataset, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n items (0 = all) as tensors (N, C, H, W), (N,)."""
    return stack_range(dataset, 0, len(dataset) if n == 0 else min(n, len(dataset)))


def real_features(dataset, n: int, features, cache: str | Path | None = None) -> tuple[Any, Any]:
    """Inception features (M, D) and labels (M,) of the first n items (0 = all) of `dataset`,
    computed batch by batch and cached in the .npz `cache` (recomputed when its count differs)."""
    import numpy as np

    from dualat.records import atomic_open

    n = len(dataset) if n == 0 else min(n, len(dataset))
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as f:
            if int(f["n"]) == n:
                return f["feats"].astype(np.float64), f["labels"]
    feats, labels = [], []
    for start in range(0, n, 256):
        x, y = stack_range(dataset, start, min(start + 256, n))
        feats.append(features(x))
        labels.append(y.numpy())
    feats_all, labels_all = np.concatenate(feats), np.concatenate(labels)
    if cache is not None:
        with atomic_open(cache, "wb") as f:
            # Inception computes in float32, so float32 storage loses nothing and halves the file.
            np.savez(f, feats=feats_all.astype(np.float32), labels=labels_all, n=n)
    return feats_all, labels_all


# Profiles that cover only some datasets; the others run through every stage as "not computed".
PROFILE_DATASETS = {"proxy": ("cifar10",)}


def profile_scope(cfg: Config) -> NotComputed | None:
    """NotComputed when `cfg.profile` does not cover `cfg.data.dataset` (proxy: CIFAR-10 only)."""
    covered = PROFILE_DATASETS.get(cfg.profile)
    if covered is None or cfg.data.dataset in covered:
        return None
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "rin": "RestrictedImageNet"}
    return NotComputed(f"{cfg.profile} profile is {' and '.join(names[d] for d in covered)} only")


def missing_data(cfg: Config) -> NotComputed | None:
    """NotComputed naming the missing source when training data, test data or p_ood is absent,
    or when the profile does not cover the dataset (`profile_scope`)."""
    from dualat.data import DataMissingError

    scope = profile_scope(cfg)
    if scope is not None:
        return scope
    try:
        train_set(cfg), test_set(cfg), ood_set(cfg)
    except DataMissingError as e:
        return NotComputed(" ".join(str(e).split()) + " (README: Data)")
    return None


# --- status files: how a stage says "not computed" to the stages after it -----------------------


def write_status(out_dir: str | Path, reason: NotComputed | None, **info: Any) -> dict:
    status = {"computed": reason is None, "reason": None if reason is None else reason.reason} | info
    if distributed.is_main():
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1, default=str))
        tmp.replace(out_dir / "status.json")
    distributed.barrier()  # under torchrun rank 0 writes; the others go on once it is there
    return status


def read_status(out_dir: str | Path) -> NotComputed | None:
    """None when the stage that wrote out_dir computed its outputs, else its NotComputed."""
    path = Path(out_dir) / "status.json"
    if not path.exists():
        return NotComputed(f"{path} is missing; run its stage first")
    status = json.loads(path.read_text())
    return None if status["computed"] else NotComputed(status["reason"])


# --- models ---------------------------------------------------------------------------------------


def new_model(cfg: Config) -> nn.Module:
    from dualat.models import build_model

    return build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.depth, cfg.model.widen_factor).to(device())


def load_model(cfg: Config, path: str | Path, key: str = "model") -> nn.Module:
    """A trained model in eval mode from a checkpoint: its selected weights (`key` "model", the
    EMA weights where EMA is on) or the trained weights ("plain"); or a released state dict."""
    from dualat import checkpoint
    from dualat.models import load_released

    state = checkpoint.load(path)
    weights = state[key] if key in state else state
    return load_released(new_model(cfg), weights).eval()


# --- FID of a model's samples -----------------------------------------------------------------------


def inception(user_path: str | None = None):
    """The FID Inception network on the pipeline's device (weights: see metrics.inception_path)."""
    from dualat.metrics import InceptionFeatures

    return InceptionFeatures(user_path, device=device())


def reference_stats(cfg: Config, path: str | Path, features=None) -> tuple[Any, Any]:
    """Inception statistics of the first `sample.fid_ref_n` training images, cached at `path`;
    their features and labels are cached beside it (features.npz, reused by the counterfactuals)."""
    from dualat.data import test_transform
    from dualat.metrics import cached_stats

    def compute():
        train = train_set(cfg, test_transform(cfg.data.dataset))
        return real_features(
            train, cfg.sample.fid_ref_n, features or inception(), Path(path).with_name("features.npz")
        )[0]

    return cached_stats(path, compute)


def real_features_path(dataset: str) -> Path:
    """Features and labels of the FID reference images (written by the prepare stage)."""
    return fid_ref_path(dataset).with_name("features.npz")


def sample_fid_fn(cfg: Config, ref_path: str | Path):
    """fid(model, n): FID of n class-balanced conditional samples (Table 8's T for Dual-AT)."""
    from dualat.data import test_transform
    from dualat.generate import balanced_labels, generate, seed_images
    from dualat.metrics import fid_to_reference

    features = inception()
    reference_stats(cfg, ref_path, features)
    seeds_all = ood_set(cfg, test_transform(cfg.data.dataset))

    def fid(model: nn.Module, n: int) -> float:
        # seeds after the n_samples used by the final evaluation: selection and report stay apart
        seeds = seed_images(seeds_all, n, offset=cfg.sample.n_samples)
        x = generate(
            model,
            seeds,
            cfg.sample.steps.dualat,
            cfg.sample.step_size,
            balanced_labels(n, cfg.data.num_classes),
            cfg.sample.batch_size,
        )
        return fid_to_reference(features(x), ref_path)

    return fid


# --- stages ---------------------------------------------------------------------------------------


def prepared_dir(dataset: str) -> Path:
    return Path("data/prepared") / dataset


def fid_ref_path(dataset: str) -> Path:
    """The cached Inception statistics of the training set (FID reference, A.2)."""
    return prepared_dir(dataset) / "fid_ref" / "stats.npz"


def prepare(cfg: Config, out_dir: str | Path) -> dict:
    """Check every data source of the dataset (out_dir/status.json, read by the training stages)
    and cache the FID reference statistics (out_dir/fid_ref/, read by the evaluation stages).
    Each status file changes only when its content does, so DVC skips what does not depend on it."""
    out_dir = Path(out_dir)
    reason = missing_data(cfg)
    info = {} if reason else {"n_train": len(train_set(cfg)), "n_test": len(test_set(cfg)), "n_ood": len(ood_set(cfg))}
    status = write_status(out_dir, reason, **info)
    if reason is None:
        mu, _ = reference_stats(cfg, out_dir / "fid_ref" / "stats.npz")
        write_status(out_dir / "fid_ref", None, n_images=cfg.sample.fid_ref_n or info["n_train"], dim=len(mu))
    else:
        write_status(out_dir / "fid_ref", reason)
    return status


def train(
    cfg: Config,
    method: str,
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    ref_path=None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `method` (standard_at | ratio | dualat) into out_dir; dualat starts from `init`.

    Under torchrun (after `distributed.init_from_env()`) every process trains on its shard of the
    training and OOD sets with the same seeds; batch sizes are per process."""
    from dualat.data import BatchStream, classification_transform, derive_seed, generative_transform, stage2_streams
    from dualat.train import train_stage1, train_stage2

    out_dir = Path(out_dir)
    if method not in METHOD_STAGE:
        raise ValueError(f"method must be one of {', '.join(METHOD_STAGE)}, got {method!r}")
    reason = missing_data(cfg) or (read_status(Path(init).parent) if init is not None else None)
    if reason is not None:
        return write_status(out_dir, reason, method=method)
    t0 = time.time()
    rank, world = distributed.rank(), distributed.world_size()

    def part(dataset):  # this process's shard of a training or OOD set
        return dataset if world == 1 else distributed.shard(dataset, rank, world)

    torch.manual_seed(cfg.stage1.seed)
    model = new_model(cfg)
    data_name = cfg.data.dataset
    x_test, y_test = stack(test_set(cfg))
    config = {"profile": cfg.profile, "method": method} | to_dict(cfg)
    if method in ("standard_at", "ratio"):
        s = cfg.stage1
        ds = train_set(cfg, classification_transform(data_name))
        weights = getattr(ds, "sample_weights", None) if cfg.data.rin_balance else None
        ds = part(ds)
        if weights is not None and world > 1:
            weights = weights[ds.indices]
        stream = BatchStream(ds, s.batch_size, s.seed, workers=cfg.data.workers, weights=weights)
        ood_stream = None
        if method == "ratio":
            aug = (
                classification_transform(data_name)
                if cfg.ratio.ood_augmentation == "classification"
                else generative_transform(data_name)
            )
            ood_stream = BatchStream(
                part(ood_set(cfg, aug)), s.batch_size, derive_seed(s.seed, 1), workers=cfg.data.workers
            )
        result = train_stage1(
            model, s, stream, len(stream.sampler), (x_test, y_test), out_dir,
            ratio=cfg.ratio if method == "ratio" else None, ood_stream=ood_stream, config=config,
            progress=progress, stop_after=stop_after,
        )  # fmt: skip
    else:
        if init is None:
            raise ValueError("dualat training needs init=<stage-1 checkpoint>")
        s = cfg.stage2
        model = load_model(cfg, init, "model" if s.init == "ema" else "plain").train()
        streams = stage2_streams(
            part(train_set(cfg, classification_transform(data_name))),
            part(train_set(cfg, generative_transform(data_name, s.sampler.augmentation))),
            part(ood_set(cfg, generative_transform(data_name, s.sampler.augmentation))),
            s.batch_size, s.seed, cfg.data.workers,
        )  # fmt: skip
        fid_fn = sample_fid_fn(cfg, ref_path) if ref_path is not None and s.eval_fid_samples > 0 else None
        result = train_stage2(
            model, s, streams.cls, streams.gen, streams.ood, (x_test, y_test), out_dir,
            fid_fn=fid_fn, config=config, progress=progress, stop_after=stop_after,
        )  # fmt: skip
    return write_status(
        out_dir,
        None,
        method=method,
        seconds=time.time() - t0,
        steps=result["steps"],
        best=result["best"],
        T=result.get("T"),
    )
