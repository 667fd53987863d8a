"""Sample quality (group "generation"): FID and KID of class-conditional (Eq. 14) and
unconditional (Eq. 8) samples from OOD seed images, the control (the seed images themselves),
Inception Score and Table 8's grid over T (Tables 1, 2, 8, 9; Figures 5-8)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dualat import datasets, distributed, fid_reference, launch
from dualat.config import METHODS, Config, ConfigError, SampleConfig
from dualat.data import test_transform
from dualat.evaluation.runner import merged, not_computed, run, save_grid, timed
from dualat.fid_reference import Features
from dualat.generate import balanced_labels, images_at, indices_sha256, report_indices, seed_split, selection_size
from dualat.metrics import fid_to_reference, inception_score, kid
from dualat.model_io import device
from dualat.progress import bar
from dualat.protocol import fid_protocol
from dualat.records import NotComputed
from dualat.sampling import sample_conditional, sample_unconditional

N_SHOW = 100  # images in the sample grids (10 per row)


def generation(
    cfg: Config,
    method: str,
    model_path: str | Path,
    ref_stats_path: str | Path,
    out_dir: str | Path,
    *,
    features: Features | dict[str, Features] | None = None,
    is_weights: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """FID and KID of class-conditional (Eq. 14) and unconditional (Eq. 8) samples from the same
    OOD seed images, mean and std over the sampling seeds `sample.seeds`; the control (the seed
    images x0 themselves, before any step); Inception Score; Table 8's grid over T.

    Seed images are drawn at random over the whole OOD source (`generate.seed_split`): each seed of
    `sample.seeds` draws `n_samples` of them with labels i mod K; the grid uses the held-out
    selection block, as training-time FID does. `features` defaults to the FID network of
    `sample.fid_mode` (its missing weights make every FID/KID NotComputed); a dict gives one per
    FID mode. With `sample.fid_second_mode` the same samples are also scored in that mode
    (`fid_modes` of the record: {mode: FID/KID mean ± std over seeds, its protocol}; a mode whose
    weights are missing says so there); `is_weights` (default
    `sample.is_weights`) is pytorch-fid's 1008-class Inception for IS (else IS is NotComputed).
    Writes out_dir/generation.json, seeds.png, samples_conditional.png, samples_unconditional.png
    and samples_conditional_T<T>.png for each T of the grid.

    With `compute` asking for several processes (and the default `features`) this call runs
    torchrun: each process samples its contiguous range of batches (`distributed.spans`); the
    features are merged in item order before any FID, so the record equals one process's.
    """
    if features is None and launch.wanted(cfg):
        paths = {"model_path": str(model_path), "ref_stats_path": str(ref_stats_path), "out_dir": str(out_dir)}
        is_path = None if is_weights is None else str(is_weights)
        return launch.run("generation", cfg, out_dir, method=method, is_weights=is_path, progress=progress, **paths)
    is_weights = is_weights if is_weights is not None else (cfg.sample.is_weights or None)
    given = features if isinstance(features, dict) else {cfg.sample.fid_mode: features} if features else {}
    weights = {
        mode: fid_reference.fid_weights(fid_reference.with_mode(cfg, mode))
        if mode not in given else {"path": "caller's features", "sha256": None}
        for mode in fid_reference.fid_modes(cfg)
    }  # fmt: skip
    compute = partial(
        generation_metrics, cfg=cfg, T=getattr(cfg.sample.steps, method) if method in METHODS else None,
        ref_stats_path=ref_stats_path, out_dir=Path(out_dir), features=given, weights=weights,
        is_weights=is_weights, progress=progress,
    )  # fmt: skip
    reuse = {"is_weights": str(is_weights)} | {f"fid_weights_{m}": w["sha256"] for m, w in weights.items()}
    return run("generation", cfg, method, model_path, out_dir, compute, reuse if not given else None)


def generation_metrics(
    model: nn.Module, seconds: dict, *, cfg: Config, T: int, ref_stats_path: str | Path, out_dir: Path,
    features: dict[str, Features], weights: dict[str, dict], is_weights: str | Path | None, progress: bool,
) -> dict:  # fmt: skip
    """The metrics of `generation` for a loaded model with T sampling steps; seconds per part
    are added to `seconds`. `weights`: {FID mode: fid_reference.fid_weights}, the first mode is
    `sample.fid_mode`; `features`: the caller's extractors by mode (the others are built here)."""
    sample, primary = cfg.sample, cfg.sample.fid_mode
    protocols = {m: _fid_protocol(cfg, ref_stats_path, w, m, T) for m, w in weights.items()}
    if weights[primary].get("missing") is not None:
        reason = weights[primary]["missing"]
        return not_computed("generation", cfg, reason) | {"fid_protocol": protocols[primary]} | {
            "fid_modes": {m: _mode_not_computed(reason, protocols[m]) for m in weights}
        }  # fmt: skip
    source = datasets.ood_set(cfg, test_transform(cfg.data.dataset))
    selection, pool = seed_split(len(source), selection_size(cfg), sample.selection_seed)
    check_seed_pool(cfg, len(source), len(pool))
    usable = [m for m, w in weights.items() if w.get("missing") is None]
    extractors = {m: features.get(m) or fid_reference.inception(fid_reference.with_mode(cfg, m)) for m in usable}
    refs = {}
    with timed(seconds, "reference_stats"):  # computed and cached unless the mode's reference exists
        for m in usable:
            mode_cfg, path = fid_reference.with_mode(cfg, m), fid_reference.mode_ref_path(cfg, ref_stats_path, m)
            distributed.main_first(lambda c=mode_cfg, p=path, e=extractors[m]: fid_reference.reference_stats(c, p, e))
            refs[m] = (path, fid_reference.reference_features(mode_cfg, path, extractors[m]))
    per_mode, first, hashes = {m: [] for m in usable}, None, []
    for seed in sample.seeds:
        indices = report_indices(pool, sample.n_samples, seed)
        hashes.append(indices_sha256(indices))
        with timed(seconds, "sampling_and_features"):  # one sampling pass, features in every mode
            keep = first is None and is_weights is not None
            out = _sample_report(model, source, indices, cfg, T, extractors, keep_all=keep, progress=progress)
        with timed(seconds, "fid_kid"):
            for m in usable:
                per_mode[m].append(_seed_metrics(seed, out["feats"][m], *refs[m], sample))
        first = out if first is None else first
    per_seed, features = per_mode[primary], extractors[primary]
    with timed(seconds, "grid"):
        grid, grid_shown = _sample_grid(model, source, selection[: sample.n_grid_samples], cfg, features, progress)
    grid_T = sorted(grid)
    grid_fid = [fid_to_reference(grid[t], ref_stats_path) for t in grid_T]
    with timed(seconds, "inception_score"):
        score = _inception_score(first["all_conditional"], is_weights, progress)
    _save_sample_grids(first, out_dir)
    for t, shown in grid_shown.items():  # e.g. Figure 6's RATIO at 32 steps (selection seeds)
        save_grid(shown, out_dir / f"samples_conditional_T{t}.png", 10)
    seeds = {"permutation_seeds": list(sample.seeds), "n_source": len(source), "first_indices_sha256": hashes}
    seeds |= {"selection_seed": sample.selection_seed, "n_selection": len(selection)}
    seeds["selection_sha256"] = indices_sha256(selection)
    best_T = grid_T[int(np.argmin(grid_fid))] if grid_T else None
    modes = {m: _over_seeds(per_mode[m]) | {"protocol": protocols[m]["text"]} for m in usable}
    modes |= {m: _mode_not_computed(w["missing"], protocols[m]) for m, w in weights.items() if m not in usable}
    return _over_seeds(per_seed) | {
        "fid_modes": modes,
        "inception_score": score,
        "steps": T,
        "step_size": sample.step_size,
        "n_samples": sample.n_samples,
        "fid_protocol": protocols[primary],
        "per_seed": per_seed,
        "seeds": seeds,
        "grid": {"T": grid_T, "fid": grid_fid, "best_T": best_T, "n": sample.n_grid_samples},
    }


def check_seed_pool(cfg: Config, n_source: int, n_pool: int) -> None:
    """ConfigError naming `sample.n_samples` when each sampling seed asks for more seed images
    than the OOD source has outside the selection block (before any sampling)."""
    if cfg.sample.n_samples > n_pool:
        raise ConfigError(
            f"{cfg.profile}.{cfg.data.dataset}.sample.n_samples is {cfg.sample.n_samples}, but the OOD source "
            f"(data.ood: {cfg.data.ood}) has {n_source} images, {n_source - n_pool} of them held out for "
            f"selection (max(stage2.eval_fid_samples, sample.n_grid_samples)): at most {n_pool}; lower "
            "sample.n_samples or use a larger OOD source (data.n_ood)"
        )


def _fid_protocol(cfg: Config, ref_stats_path: str | Path, weights: dict, mode: str, T: int | None) -> dict:
    """How the FIDs of `mode` were computed: the one-line protocol (`protocol.fid_protocol`),
    mode, N, reference (path and key), weights."""
    mode_cfg = fid_reference.with_mode(cfg, mode)
    key = fid_reference.fid_ref_key(mode_cfg)
    protocol = {"text": fid_protocol(cfg, T, mode), "mode": mode, "n": cfg.sample.n_samples}
    protocol["reference"] = {"path": str(fid_reference.mode_ref_path(cfg, ref_stats_path, mode)), "key": key}
    protocol["weights"] = weights["path"]
    protocol["weights_sha256"] = weights["sha256"]
    if weights.get("missing") is not None:
        protocol["weights_missing"] = weights["missing"]
    return protocol


def _mode_not_computed(reason: NotComputed, protocol: dict) -> dict:
    """A `fid_modes` entry of a mode whose network weights are missing."""
    keys = ("fid_conditional", "fid_conditional_std", "fid_unconditional", "fid_unconditional_std")
    return dict.fromkeys(keys, reason) | {"protocol": protocol["text"]}


def _seed_metrics(
    seed: int, out: dict, ref_stats_path: str | Path, ref_feats: np.ndarray, sample: SampleConfig
) -> dict:
    """FID and KID of one sampling seed's conditional and unconditional samples and of its seed
    images (the control); KID subsets drawn with the same seed."""

    def both(feats: np.ndarray) -> tuple[float, dict]:
        return fid_to_reference(feats, ref_stats_path), kid(
            feats, ref_feats, sample.kid_subsets, sample.kid_subset_size, seed
        )

    (fid_c, kid_c), (fid_u, kid_u), (fid_0, kid_0) = (both(out[k]) for k in ("conditional", "unconditional", "seeds"))
    return {
        "seed": seed,
        "fid_conditional": fid_c,
        "fid_unconditional": fid_u,
        "kid_conditional": kid_c,
        "kid_unconditional": kid_u,
        "control": {"fid": fid_0, "kid": kid_0},
    }


def _over_seeds(per_seed: list[dict]) -> dict:
    """fid_* = mean over seeds, fid_*_std = their std (ddof 1; None with one seed); kid_*: mean of
    the seeds' KID means, std = root mean square of their subset stds; control likewise."""

    def fid(values: list[float]) -> tuple[float, float | None]:
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None

    def kid_over(values: list[dict]) -> dict:
        if any(isinstance(v["mean"], NotComputed) for v in values):
            return values[0]
        mean = float(np.mean([v["mean"] for v in values]))
        std = float(np.sqrt(np.mean([v["std"] ** 2 for v in values])))
        return {"mean": mean, "std": std, "subsets": values[0]["subsets"], "subset_size": values[0]["subset_size"]}

    result: dict[str, Any] = {}
    for kind in ("conditional", "unconditional"):
        result[f"fid_{kind}"], result[f"fid_{kind}_std"] = fid([r[f"fid_{kind}"] for r in per_seed])
        result[f"kid_{kind}"] = kid_over([r[f"kid_{kind}"] for r in per_seed])
    control_fid, control_std = fid([r["control"]["fid"] for r in per_seed])
    result["control"] = {
        "fid": control_fid,
        "fid_std": control_std,
        "kid": kid_over([r["control"]["kid"] for r in per_seed]),
    }
    return result


def _inception_score(images: torch.Tensor | None, is_weights: str | Path | None, progress: bool):
    """{"mean", "std"} of the first seed's conditional samples, or NotComputed with the reason."""
    if is_weights is None:
        return inception_score(torch.zeros(0, 3, 1, 1))  # NotComputed: how to supply the weights
    if not Path(is_weights).is_file():
        return NotComputed(f"Inception Score weights not found at {is_weights} (sample.is_weights)")
    score = inception_score(images, is_weights=is_weights, device=device(), progress=progress)
    return score if isinstance(score, NotComputed) else {"mean": score[0], "std": score[1]}


def _sample_report(
    model: nn.Module, source, indices: np.ndarray, cfg: Config, T: int, features: dict[str, Features], *,
    keep_all: bool, progress: bool,
) -> dict:  # fmt: skip
    """Features ("feats": {FID mode: {seeds, conditional, unconditional}}) of the seed images
    x0 = source[indices] (the control), of their conditional (labels i mod K, Eq. 14) and
    unconditional (Eq. 8) samples after T steps, in every mode of `features` from the same
    samples; the first N_SHOW of each for the figures; with `keep_all` all conditional samples as
    uint8 (for IS).

    Seeds are read and sampled one batch at a time, so only features stay in memory. Each process
    samples its batches (`distributed.spans`, the batches of one process) and the results are
    merged in item order: the sampler is deterministic, so the merge equals one process's result.
    """
    sample, dev = cfg.sample, device()
    out: dict[str, Any] = {(m, k): [] for m in features for k in ("seeds", "conditional", "unconditional")}
    shown: dict[str, list] = {"seeds": [], "conditional": [], "unconditional": [], "labels": []}
    kept = []
    labels = balanced_labels(len(indices), cfg.data.num_classes)  # seed i -> label i mod K
    for start, stop in bar(distributed.spans(len(indices), sample.batch_size), desc="sampling", enabled=progress):
        x0, y = images_at(source, indices[start:stop]).to(dev), labels[start:stop].to(dev)  # (B, C, H, W), (B,)
        x_c = sample_conditional(model, x0, y, T, sample.step_size).cpu()  # Eq. 14
        x_u = sample_unconditional(model, x0, T, sample.step_size).cpu()  # Eq. 8
        for key, x in (("seeds", x0.cpu()), ("conditional", x_c), ("unconditional", x_u)):
            for mode, extract in features.items():
                out[mode, key].append(extract(x))
            if start < N_SHOW:
                shown[key].append(x[: N_SHOW - start])
        if start < N_SHOW:
            shown["labels"].append(y[: N_SHOW - start].cpu())
        if keep_all:
            kept.append((x_c * 255).round().to(torch.uint8))
    result: dict[str, Any] = {"feats": {m: {} for m in features}}
    for (mode, key), v in out.items():
        result["feats"][mode][key] = merged(v, np.concatenate)
    result["shown"] = {key: merged(v, torch.cat) for key, v in shown.items()}
    result["all_conditional"] = merged(kept, torch.cat) if keep_all else None
    return result


def _sample_grid(
    model: nn.Module, source, indices: np.ndarray, cfg: Config, features: Features, progress: bool
) -> tuple[dict[int, np.ndarray], dict[int, torch.Tensor]]:
    """({T: features}, {T: images}) of conditional samples at each T of `sample.steps_grid`
    (Table 8) from the seed images source[indices]; the images are the first N_SHOW, sorted by
    label. One trajectory continues from T to the next larger T: the sampler is deterministic,
    so x_T' = T' - T more steps from x_T."""
    sample, grid, dev = cfg.sample, sorted(set(cfg.sample.steps_grid)), device()
    out: dict[int, list] = {t: [] for t in grid}
    shown: dict[int, list] = {t: [] for t in grid}
    labels = balanced_labels(len(indices), cfg.data.num_classes)
    spans = distributed.spans(len(indices) if grid else 0, sample.batch_size)  # this process's batches
    for start, stop in bar(spans, desc="grid", enabled=progress):
        x, y, done = images_at(source, indices[start:stop]).to(dev), labels[start:stop].to(dev), 0
        for t in grid:
            x = sample_conditional(model, x, y, t - done, sample.step_size)
            done = t
            out[t].append(features(x.cpu()))
            if start < N_SHOW:
                shown[t].append(x[: N_SHOW - start].cpu())
    order = torch.argsort(labels[:N_SHOW], stable=True)  # as many as are shown: min(N_SHOW, n)
    features_at = {t: merged(f, np.concatenate) for t, f in out.items()}  # every T on every rank
    images = {t: merged(v, torch.cat) for t, v in shown.items()}
    features_at = {t: f for t, f in features_at.items() if f is not None}
    return features_at, {t: v[order] for t, v in images.items() if v is not None}


def _save_sample_grids(out: dict, out_dir: Path) -> None:
    """seeds.png, samples_conditional.png, samples_unconditional.png: the first N_SHOW seeds and
    their samples, 10 per row, sorted by label (with K = 10, row k holds class k)."""
    shown = out["shown"]
    order = torch.argsort(shown["labels"], stable=True)
    for key, name in (
        ("seeds", "seeds"),
        ("conditional", "samples_conditional"),
        ("unconditional", "samples_unconditional"),
    ):
        save_grid(shown[key][order], out_dir / f"{name}.png", 10)
