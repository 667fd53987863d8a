"""The FID reference (A.2): the FID network of `sample.fid_mode`, the Inception statistics and
features of the first `sample.fid_ref_n` training images (cached under a key of what they are
computed from), and the FID of a model's samples used during training to select stage 2's
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dualat import datasets, generate, metrics
from dualat.config import Config
from dualat.data import DataError, test_transform
from dualat.model_io import device
from dualat.progress import bar
from dualat.records import NotComputed, atomic_open, sha256_file

Features = Callable[[torch.Tensor], np.ndarray]  # images (N, 3, H, W) in [0, 1] -> features (N, D)


def inception(cfg: Config | None = None) -> metrics.InceptionFeatures:
    """The FID Inception network of `cfg.sample.fid_mode` (weights `sample.fid_weights`, else the
    mode's default lookup, see metrics.fid_weights) on the pipeline's device; without cfg
    clean-fid's "clean" mode. FileNotFoundError naming the file when the weights are missing."""
    if cfg is None:
        return metrics.InceptionFeatures(device=device())
    return metrics.InceptionFeatures(cfg.sample.fid_weights or None, device=device(), mode=cfg.sample.fid_mode)


def fid_modes(cfg: Config) -> tuple[str, ...]:
    """The FID modes of an evaluation: `sample.fid_mode`, then `sample.fid_second_mode` if set."""
    second = cfg.sample.fid_second_mode
    return (cfg.sample.fid_mode,) + ((second,) if second and second != cfg.sample.fid_mode else ())


def with_mode(cfg: Config, mode: str) -> Config:
    """`cfg` computing FID in `mode`; a second mode's weights are its default lookup (the file of
    `sample.fid_weights` belongs to `sample.fid_mode`)."""
    if mode == cfg.sample.fid_mode:
        return cfg
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, fid_mode=mode, fid_weights=""))


def mode_ref_path(cfg: Config, ref_path: str | Path, mode: str) -> Path:
    """The reference statistics of `mode`: `ref_path` for `sample.fid_mode`, <folder>/<mode>/<name>
    for the second mode (its features.npz beside it)."""
    ref_path = Path(ref_path)
    return ref_path if mode == cfg.sample.fid_mode else ref_path.parent / mode / ref_path.name


def fid_weights(cfg: Config) -> dict:
    """The FID network's weights: {"path", "sha256"}, or {"path": None, "missing": reason}."""
    found = metrics.fid_weights(cfg.sample.fid_mode, cfg.sample.fid_weights or None)
    if isinstance(found, NotComputed):
        return {"path": None, "sha256": None, "missing": found}
    return {"path": str(found), "sha256": sha256_file(found)}  # hashed once per process (~90 MB)


def fid_ref_key(cfg: Config) -> dict:
    """What the FID reference statistics are computed from; a cached file of another key is
    recomputed, never reused (e.g. the quick profile's 500-image reference in a paper run, or
    features of another FID mode or network)."""
    weights = fid_weights(cfg)
    return {
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "split": "train",
        "n": cfg.sample.fid_ref_n,
        "data": datasets.data_fingerprint(cfg)[cfg.data.dataset],
        "mode": cfg.sample.fid_mode,  # clean-fid's preprocessing and network (metrics.generative)
        "weights": weights["sha256"] or str(weights["missing"]),
    }


def real_features(
    dataset, n: int, features: Features, cache: str | Path | None = None, key: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inception features (M, D) and labels (M,) of the first n items (0 = all) of `dataset`,
    computed batch by batch and cached in the .npz `cache` under `key` (recomputed when the
    cached file was made from other images: another key or count)."""
    n = len(dataset) if n == 0 else min(n, len(dataset))
    stamp = json.dumps({"n": n} | (key or {}), sort_keys=True)
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as f:
            if "key" in f and str(f["key"]) == stamp:
                feats_cached, labels_cached = f["feats"].astype(np.float64), f["labels"]
                check_array(feats_cached, cache, "feats")
                if labels_cached.shape != (len(feats_cached),):
                    raise _damaged(cache, f"labels of shape {labels_cached.shape} for {len(feats_cached)} features")
                return feats_cached, labels_cached
    feats, labels = [], []
    for start in bar(range(0, n, 256), desc="Inception features"):
        x, y = datasets.stack_range(dataset, start, min(start + 256, n))
        feats.append(features(x))
        labels.append(y.numpy())
    feats_all, labels_all = np.concatenate(feats), np.concatenate(labels)
    if cache is not None:
        with atomic_open(cache, "wb") as f:
            # Inception computes in float32, so float32 storage loses nothing and halves the file.
            np.savez(f, feats=feats_all.astype(np.float32), labels=labels_all, key=np.array(stamp))
    return feats_all, labels_all


def reference_stats(cfg: Config, path: str | Path, features: Features | None = None) -> tuple[Any, Any]:
    """Inception statistics of the first `sample.fid_ref_n` training images, cached at `path`
    under `fid_ref_key(cfg)`; their features and labels are cached beside it (features.npz,
    reused by the counterfactuals and by KID). FileNotFoundError when the mode's weights are
    missing and nothing is cached."""
    stats = metrics.cached_stats(path, lambda: reference_features(cfg, path, features), fid_ref_key(cfg))
    check_reference(path)
    return stats


def check_reference(path: str | Path) -> None:
    """DataError naming `path` when the cached statistics cannot give a FID: mu not (D,), sigma
    not (D, D), features (kept when fewer images than D) not (M, D), or a NaN/inf in any of them
    (a NaN would otherwise end generation after all sampling in "SVD did not converge", or give
    null FIDs and a best T picked from NaNs)."""
    with np.load(path) as ref:
        missing = [k for k in ("mu", "sigma") if k not in ref]
        if missing:
            raise _damaged(path, f"no {missing[0]}")
        mu, sigma = ref["mu"], ref["sigma"]
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise _damaged(path, f"mu of shape {mu.shape} and sigma of shape {sigma.shape}")
        check_array(mu, path, "mu")
        check_array(sigma, path, "sigma")
        if "feats" in ref:
            check_array(ref["feats"], path, "feats", dim=len(mu))


def check_array(values: np.ndarray, path: str | Path, name: str, dim: int | None = None) -> None:
    """DataError when `values` (the array `name` of `path`) holds NaN/inf, or features are not
    (M, dim) with M >= 2."""
    if name == "feats" and (values.ndim != 2 or len(values) < 2 or (dim is not None and values.shape[1] != dim)):
        raise _damaged(path, f"feats of shape {values.shape}" + (f" (expected (M, {dim}))" if dim else ""))
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise _damaged(path, f"{bad} NaN/inf values in {name}")


def _damaged(path: str | Path, what: str) -> DataError:
    return DataError(
        f"{path}: FID reference is damaged ({what}); delete {Path(path).parent} and rerun the prepare stage "
        "(dvc repro prepare), which recomputes it"
    )


def reference_features(cfg: Config, path: str | Path, features: Features | None = None) -> np.ndarray:
    """Features (M, 2048) of the FID reference images (features.npz beside `path`, same key)."""
    train = datasets.train_set(cfg, test_transform(cfg.data.dataset))
    cache = Path(path).with_name("features.npz")
    return real_features(train, cfg.sample.fid_ref_n, features or inception(cfg), cache, fid_ref_key(cfg))[0]


def sample_fid_fn(cfg: Config, ref_path: str | Path) -> Callable[[nn.Module, int], float]:
    """fid(model, n): FID of n class-balanced conditional samples (Table 8's T for Dual-AT) from
    the held-out selection seeds (`generate.seed_split`), disjoint from the reported samples'."""
    features = inception(cfg)
    reference_stats(cfg, ref_path, features)
    seeds_all = datasets.ood_set(cfg, test_transform(cfg.data.dataset))
    selection, _ = generate.seed_split(len(seeds_all), generate.selection_size(cfg), cfg.sample.selection_seed)

    def fid(model: nn.Module, n: int) -> float:
        x = generate.generate(
            model,
            generate.images_at(seeds_all, selection[:n]),
            cfg.sample.steps.dualat,
            cfg.sample.step_size,
            generate.balanced_labels(n, cfg.data.num_classes),
            cfg.sample.batch_size,
        )
        return metrics.fid_to_reference(features(x), ref_path)

    return fid
