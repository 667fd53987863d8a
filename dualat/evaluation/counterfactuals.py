"""Counterfactuals (group "counterfactuals", Figure 1, A.3): training images pushed by targeted L2
PGD towards another class; class-wise FID to the real images of that class and the confidence."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dualat import datasets, distributed, fid_reference, launch
from dualat.attacks import pgd_target
from dualat.config import AttackConfig, Config, EvaluateConfig
from dualat.data import test_transform
from dualat.evaluation.runner import merged, run, save_grid, timed
from dualat.fid_reference import Features
from dualat.metrics import classwise_fid, predict_logits
from dualat.model_io import device
from dualat.progress import bar

N_CF_SHOW = 8  # rows of the counterfactual figure


def counterfactuals(
    cfg: Config,
    method: str,
    model_path: str | Path,
    out_dir: str | Path,
    real_features_cache: str | Path | None = None,
    *,
    features: Features | None = None,
    progress: bool = True,
) -> dict:
    """Counterfactuals (Figure 1): the first `evaluate.cf_n` training images pushed by targeted
    L2 PGD towards a random class t != y, for each eps in `evaluate.cf_eps`; class-wise FID to the
    real training images of t (the first `sample.fid_ref_n`, features cached at
    `real_features_cache`) averaged over classes, and the mean confidence p(t|x').

    Writes out_dir/counterfactuals.json and counterfactuals.png (8 rows: original, then each eps).
    With `compute` asking for several processes (and the default `features`) this call runs
    torchrun; the images are split by index ranges and merged in item order (docs/gpus.md).
    """
    if features is None and launch.wanted(cfg):
        paths = {"model_path": str(model_path), "out_dir": str(out_dir)}
        cache = None if real_features_cache is None else str(real_features_cache)
        return launch.run(
            "counterfactuals", cfg, out_dir, method=method, real_features_cache=cache, progress=progress, **paths
        )
    compute = partial(
        counterfactual_metrics, cfg=cfg, out_dir=Path(out_dir), real_features_cache=real_features_cache,
        features=features, progress=progress,
    )  # fmt: skip
    return run("counterfactuals", cfg, method, model_path, out_dir, compute, {} if features is None else None)


def counterfactual_metrics(
    model: nn.Module, seconds: dict, *, cfg: Config, out_dir: Path, real_features_cache: str | Path | None,
    features: Features | None, progress: bool,
) -> dict:  # fmt: skip
    """The metrics of `counterfactuals` for a loaded model; seconds per part are added to `seconds`."""
    settings, K, dev = cfg.evaluate, cfg.data.num_classes, device()
    features = features or fid_reference.inception(cfg)
    train = datasets.train_set(cfg, test_transform(cfg.data.dataset))
    with timed(seconds, "real_features"):  # cached: rank 0 first
        feats_real, labels_real = distributed.main_first(
            lambda: fid_reference.real_features(
                train, cfg.sample.fid_ref_n, features, real_features_cache, fid_reference.fid_ref_key(cfg)
            )
        )
    n = len(train) if settings.cf_n == 0 else min(settings.cf_n, len(train))
    # t = y + offset mod K with offset uniform in 1..K-1: uniform over the classes != y.
    offset = torch.randint(1, K, (n,), generator=torch.Generator().manual_seed(settings.seed))
    feats: dict[float, list] = {eps: [] for eps in settings.cf_eps}
    conf: dict[float, list] = {eps: [] for eps in settings.cf_eps}
    targets, shown = [], []
    spans = distributed.spans(n, settings.batch_size)  # this process's batches (all without torchrun)
    with timed(seconds, "attack_and_features"):
        for start, stop in bar(spans, desc="counterfactuals", enabled=progress):
            x, y = datasets.stack_range(train, start, stop)
            t = (y + offset[start:stop]) % K
            targets.append(t)
            row = [x]
            for eps in settings.cf_eps:
                x_cf = counterfactual_images(model, x.to(dev), t.to(dev), eps, settings).cpu()
                conf[eps].append(_probs(model, x_cf, dev).gather(1, t[:, None]).squeeze(1))
                feats[eps].append(features(x_cf))
                row.append(x_cf)
            if start < N_CF_SHOW:
                shown.append(torch.stack(row, 1)[: N_CF_SHOW - start])  # (B, 1 + E, C, H, W)
    t_all = merged(targets, torch.cat)  # every process's batches, in item order
    result: dict[str, list] = {"eps": list(settings.cf_eps), "fid": [], "confidence": [], "per_class_fid": []}
    for eps in settings.cf_eps:
        feats_eps, conf_eps = merged(feats[eps], np.concatenate), merged(conf[eps], torch.cat)
        mean, per_class = classwise_fid(feats_eps, t_all.numpy(), feats_real, labels_real, K)
        result["fid"].append(mean)
        result["per_class_fid"].append(per_class)
        result["confidence"].append(conf_eps.mean().item())
    save_grid(merged(shown, torch.cat).flatten(0, 1), out_dir / "counterfactuals.png", 1 + len(settings.cf_eps))
    return result | {"n": n}


def counterfactual_attack(eps: float, settings: EvaluateConfig) -> AttackConfig:
    """The counterfactual attack of radius eps: `cf_steps` steps of cf_step_factor * eps / cf_steps."""
    return AttackConfig(
        eps=eps,
        step_size=settings.cf_step_factor * eps / settings.cf_steps,
        steps=settings.cf_steps,
        variant="ratio",
        momentum=0.9,
    )


def counterfactual_images(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, eps: float, settings: EvaluateConfig
) -> torch.Tensor:
    """Counterfactuals x' in B(x, eps) ∩ [0, 1] maximising f(x')[t]; x (B, C, H, W) and t (B,) on
    the model's device."""
    return pgd_target(model, x, t, counterfactual_attack(eps, settings))


def _probs(model: nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """p(y|x) (B, K) on the CPU, x in one batch."""
    return torch.softmax(predict_logits(model, x, len(x), dev), 1)
