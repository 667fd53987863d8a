"""Evaluation of one trained model: one function per group of the paper's results.

    accuracy         clean, PGD and AutoAttack accuracy, ECE (Tables 1, 2, 7; Figure 3)
    generation       FID of conditional / unconditional samples, IS, grid over T (Tables 1, 2, 8, 9)
    counterfactuals  class-wise FID and confidence of targeted L2 PGD images (Figure 1, A.3)
    ood              AUROC of max_y p(y|x) and -E(x), clean and adversarial (Tables 10-12, A.4)

Each takes the `Config`, the method name, the model checkpoint and an output folder, writes the
record `out_dir/<group>.json` (metrics, config, checkpoint hash, wall-clock seconds) and returns
the metrics. When the model's folder says "not computed" (`pipeline.read_status`) or a data source
is missing, every metric is that `NotComputed` and nothing raises. Images are float tensors in
[0, 1], NCHW, kept on the CPU; batches run on the model's device (`pipeline.device()`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dualat import pipeline
from dualat.config import METHODS, AttackConfig, Config, EvaluateConfig, to_dict
from dualat.records import NotComputed, read_record, to_jsonable, write_record

Features = Callable[[torch.Tensor], np.ndarray]  # images (N, 3, H, W) in [0, 1] -> features (N, D)

# Evaluation split of each OOD set (A.4); "tinyimagenet32" is the offline ImageNetOD stand-in.
OOD_SPLITS = {
    "cifar10": "test",
    "cifar100": "test",
    "svhn": "test",
    "tinyimagenet32": "val",
    "imagenet_od": "val",
    "noise": "",
}
OOD_NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "tinyimagenet32": 32}  # others vary

METRIC_KEYS = {
    "accuracy": ("clean_acc", "pgd_acc", "autoattack", "ece", "reliability", "n_test"),
    "generation": (
        "fid_conditional",
        "fid_conditional_std",
        "fid_unconditional",
        "fid_unconditional_std",
        "kid_conditional",
        "kid_unconditional",
        "control",
        "inception_score",
        "steps",
        "step_size",
        "n_samples",
        "fid_protocol",
        "per_seed",
        "seeds",
        "grid",
    ),
    "counterfactuals": ("eps", "fid", "confidence", "per_class_fid", "n"),
    "ood": ("sets", "n_id", "ood_n"),
}
N_SHOW = 100  # images in the sample grids (10 per row)
N_CF_SHOW = 8  # rows of the counterfactual figure


# --- the four evaluations ------------------------------------------------------------------------


def accuracy(cfg: Config, method: str, model_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Clean, PGD and AutoAttack (L2) accuracy, ECE and the reliability diagram; see module doc.

    Writes out_dir/accuracy.json, out_dir/reliability.png and the resumable AutoAttack state
    out_dir/autoattack_state.json.
    """

    def compute(model: nn.Module, seconds: dict) -> dict:
        from functools import partial

        from dualat.attacks import pgd_ce
        from dualat.metrics import autoattack_accuracy, pgd_accuracy, predict_logits, reliability_diagram_data

        e, dev = cfg.evaluate, pipeline.device()
        x, y = pipeline.stack(pipeline.test_set(cfg))  # (N, C, H, W), (N,)
        with _timed(seconds, "clean"):
            logits = predict_logits(model, x, e.batch_size, dev, progress)
            clean_acc = (logits.argmax(1) == y).float().mean().item()
        with _timed(seconds, "pgd"):
            pgd_acc = pgd_accuracy(model, x, y, partial(pgd_ce, cfg=e.pgd), e.batch_size, dev, progress)
        with _timed(seconds, "autoattack"):
            x_aa, y_aa = _first_test(cfg, x, y, e.autoattack_n)
            settings = {"eps": e.autoattack_eps, "version": e.autoattack_version, "n": len(x_aa), "seed": e.seed}
            aa = autoattack_accuracy(
                model, x_aa, y_aa, e.autoattack_eps, version=e.autoattack_version, batch_size=e.batch_size,
                device=dev, seed=e.seed, state_path=_autoattack_state(Path(out_dir), model_path, settings),
                progress=progress,
            )  # fmt: skip
        rel = reliability_diagram_data(torch.softmax(logits, 1), y, e.ece_bins)
        _save_reliability(rel, Path(out_dir) / "reliability.png", f"{method}, {cfg.data.dataset}")
        return {
            "clean_acc": clean_acc,
            "pgd_acc": pgd_acc,
            "autoattack": {
                "robust_acc": aa["robust"],
                "clean_acc": aa["clean"],
                "per_attack": aa["per_attack"],
                "n": aa["n"],
                "warnings": aa["warnings"],  # AutoAttack's own sanity checks, shown by the report
            },
            "ece": rel["ece"],
            "reliability": {k: _nan_to_none(rel[k]) for k in ("bin_edges", "bin_acc", "bin_conf", "bin_count")},
            "n_test": len(x),
        }

    return _run("accuracy", cfg, method, model_path, out_dir, compute, reuse={})


def generation(
    cfg: Config,
    method: str,
    model_path: str | Path,
    ref_stats_path: str | Path,
    out_dir: str | Path,
    *,
    features: Features | None = None,
    is_weights: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """FID and KID of class-conditional (Eq. 14) and unconditional (Eq. 8) samples from the same
    OOD seed images, mean and std over the sampling seeds `sample.seeds`; the control (the seed
    images x0 themselves, before any step); Inception Score; Table 8's grid over T.

    Seed images are drawn at random over the whole OOD source (`generate.seed_split`): each seed of
    `sample.seeds` draws `n_samples` of them with labels i mod K; the grid uses the held-out
    selection block, as training-time FID does. `features` defaults to the FID network of
    `sample.fid_mode` (its missing weights make every FID/KID NotComputed); `is_weights` (default
    `sample.is_weights`) is pytorch-fid's 1008-class Inception for IS (else IS is NotComputed).
    Writes out_dir/generation.json, seeds.png, samples_conditional.png, samples_unconditional.png.
    """
    T = getattr(cfg.sample.steps, method) if method in METHODS else None
    is_weights = is_weights if is_weights is not None else (cfg.sample.is_weights or None)
    weights = pipeline.fid_weights(cfg) if features is None else {"path": "caller's features", "sha256": None}

    def compute(model: nn.Module, seconds: dict) -> dict:
        from dualat.data import test_transform
        from dualat.generate import indices_sha256, report_indices, seed_split, selection_size

        s, dev = cfg.sample, pipeline.device()
        protocol = _fid_protocol(cfg, ref_stats_path, weights)
        if weights.get("missing") is not None:
            return _not_computed("generation", cfg, weights["missing"]) | {"fid_protocol": protocol}
        feats_fn = features or pipeline.inception(cfg)
        with _timed(seconds, "reference_stats"):  # computed and cached unless ref_stats_path exists
            pipeline.reference_stats(cfg, ref_stats_path, feats_fn)
            ref_feats = pipeline.reference_features(cfg, ref_stats_path, feats_fn)
        source = pipeline.ood_set(cfg, test_transform(cfg.data.dataset))
        selection, pool = seed_split(len(source), selection_size(cfg), s.selection_seed)
        per_seed, first, hashes = [], None, []
        for seed in s.seeds:
            idx = report_indices(pool, s.n_samples, seed)
            hashes.append(indices_sha256(idx))
            with _timed(seconds, "sampling_and_features"):
                keep = first is None and is_weights is not None
                out = _sample_report(model, source, idx, cfg, T, feats_fn, dev, keep_all=keep, progress=progress)
            with _timed(seconds, "fid_kid"):
                per_seed.append(_seed_metrics(seed, out, ref_stats_path, ref_feats, s))
            first = first or out
        with _timed(seconds, "grid"):
            grid, grid_shown = _sample_grid(model, source, selection[: s.n_grid_samples], cfg, feats_fn, dev, progress)
        grid_T = sorted(grid)
        grid_fid = [_fid(grid[t], ref_stats_path) for t in grid_T]
        with _timed(seconds, "inception_score"):
            score = _inception_score(first["all_conditional"], is_weights, dev, progress)
        _save_sample_grids(first, Path(out_dir))
        for t, shown in grid_shown.items():  # e.g. Figure 6's RATIO at 32 steps (selection seeds)
            _save_grid(shown, Path(out_dir) / f"samples_conditional_T{t}.png", 10)
        seeds = {"permutation_seeds": list(s.seeds), "n_source": len(source), "first_indices_sha256": hashes}
        seeds |= {"selection_seed": s.selection_seed, "n_selection": len(selection)}
        seeds["selection_sha256"] = indices_sha256(selection)
        return _over_seeds(per_seed) | {
            "inception_score": score,
            "steps": T,
            "step_size": s.step_size,
            "n_samples": s.n_samples,
            "fid_protocol": protocol,
            "per_seed": per_seed,
            "seeds": seeds,
            "grid": {
                "T": grid_T,
                "fid": grid_fid,
                "best_T": grid_T[int(np.argmin(grid_fid))] if grid_T else None,
                "n": s.n_grid_samples,
            },
        }

    reuse = {"is_weights": str(is_weights), "fid_weights": weights["sha256"]} if features is None else None
    return _run("generation", cfg, method, model_path, out_dir, compute, reuse)


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
    """

    def compute(model: nn.Module, seconds: dict) -> dict:
        from dualat.data import test_transform
        from dualat.metrics import classwise_fid

        e, K, dev = cfg.evaluate, cfg.data.num_classes, pipeline.device()
        feats_fn = features or pipeline.inception(cfg)
        train = pipeline.train_set(cfg, test_transform(cfg.data.dataset))
        with _timed(seconds, "real_features"):
            feats_real, labels_real = pipeline.real_features(
                train, cfg.sample.fid_ref_n, feats_fn, real_features_cache, pipeline.fid_ref_key(cfg)
            )
        n = len(train) if e.cf_n == 0 else min(e.cf_n, len(train))
        # t = y + offset mod K with offset uniform in 1..K-1: uniform over the classes != y.
        offset = torch.randint(1, K, (n,), generator=torch.Generator().manual_seed(e.seed))
        feats = {eps: [] for eps in e.cf_eps}
        conf = {eps: torch.zeros(n) for eps in e.cf_eps}
        t_all, shown = torch.zeros(n, dtype=torch.long), []
        with _timed(seconds, "attack_and_features"):
            for start, stop in _chunks(n, e.batch_size, progress, "counterfactuals"):
                x, y = pipeline.stack_range(train, start, stop)
                t = (y + offset[start:stop]) % K
                t_all[start:stop] = t
                row = [x]
                for eps in e.cf_eps:
                    x_cf = counterfactual_images(model, x.to(dev), t.to(dev), eps, e).cpu()
                    conf[eps][start:stop] = _probs(model, x_cf, dev).gather(1, t[:, None]).squeeze(1)
                    feats[eps].append(feats_fn(x_cf))
                    row.append(x_cf)
                if start < N_CF_SHOW:
                    shown.append(torch.stack(row, 1)[: N_CF_SHOW - start])  # (B, 1 + E, C, H, W)
        result: dict[str, list] = {"eps": list(e.cf_eps), "fid": [], "confidence": [], "per_class_fid": []}
        for eps in e.cf_eps:
            mean, per_class = classwise_fid(np.concatenate(feats[eps]), t_all.numpy(), feats_real, labels_real, K)
            result["fid"].append(mean)
            result["per_class_fid"].append(per_class)
            result["confidence"].append(conf[eps].mean().item())
        _save_grid(torch.cat(shown).flatten(0, 1), Path(out_dir) / "counterfactuals.png", 1 + len(e.cf_eps))
        return result | {"n": n}

    return _run("counterfactuals", cfg, method, model_path, out_dir, compute, {} if features is None else None)


def ood(cfg: Config, method: str, model_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """OOD detection AUROC (ID = the first `data.n_test` test images, positive) against
    `evaluate.ood_n` images drawn at random (`ood_images`) from each set in `evaluate.ood_sets`,
    for the scores max_y p(y|x) and -E(x) = logsumexp f(x); clean, and with each OOD image
    attacked (L2 PGD, `evaluate.ood_attack`) to raise the score it is judged by. Each set's cell
    records its draw (seed, set size, sha256 of the indices, provenance); a missing set gets
    NotComputed in its cell.

    Writes out_dir/ood.json.
    """

    def compute(model: nn.Module, seconds: dict) -> dict:
        from functools import partial

        from dualat.attacks import pgd_logsumexp, pgd_uniform_ce
        from dualat.data import DataMissingError
        from dualat.metrics import auroc, predict_logits, score_max_prob, score_neg_energy

        e, dev = cfg.evaluate, pipeline.device()
        x_id, _ = pipeline.stack(pipeline.test_set(cfg))
        logits_id = predict_logits(model, x_id, e.batch_size, dev, progress)
        scores = {"max_prob": (score_max_prob, pgd_uniform_ce), "neg_energy": (score_neg_energy, pgd_logsumexp)}
        sets: dict[str, Any] = {}
        for name in e.ood_sets:
            try:
                x_ood, draw = ood_images(cfg, name)
            except DataMissingError as err:
                sets[name] = _missing(err)
                continue
            logits_clean = predict_logits(model, x_ood, e.batch_size, dev)
            cell: dict[str, Any] = {"n": len(x_ood)} | draw
            with _timed(seconds, name):
                for key, (score, attack) in scores.items():
                    x_adv = _batched(partial(attack, model, cfg=e.ood_attack), x_ood, e.batch_size, dev, progress)
                    logits_adv = predict_logits(model, x_adv, e.batch_size, dev)
                    s_id = score(logits_id)
                    cell[key] = {
                        "clean": auroc(s_id, score(logits_clean)),
                        "adversarial": auroc(s_id, score(logits_adv)),
                    }
            sets[name] = cell
        return {"sets": sets, "n_id": len(x_id), "ood_n": e.ood_n}

    return _run("ood", cfg, method, model_path, out_dir, compute, reuse={})


# --- pieces callers may reuse --------------------------------------------------------------------


def counterfactual_attack(eps: float, e: EvaluateConfig) -> AttackConfig:
    """The counterfactual attack of radius eps: `cf_steps` steps of cf_step_factor * eps / cf_steps."""
    return AttackConfig(
        eps=eps, step_size=e.cf_step_factor * eps / e.cf_steps, steps=e.cf_steps, variant="ratio", momentum=0.9
    )


def counterfactual_images(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, eps: float, e: EvaluateConfig
) -> torch.Tensor:
    """Counterfactuals x' in B(x, eps) ∩ [0, 1] maximising f(x')[t]; x (B, C, H, W) and t (B,) on
    the model's device."""
    from dualat.attacks import pgd_target

    return pgd_target(model, x, t, counterfactual_attack(eps, e))


def ood_images(cfg: Config, name: str) -> tuple[torch.Tensor, dict]:
    """`evaluate.ood_n` images (N, C, H, W) in [0, 1] of OOD set `name` (all of them if it holds
    fewer), drawn uniformly without replacement over the whole set (`draw_indices` with
    `evaluate.seed`; file order would give a few classes, e.g. ImageNet's first ones), at the ID
    image size, and the draw: {seed, set_size, indices_sha256, provenance}. Only the drawn items
    are decoded. Raises DataMissingError when the set's files are absent."""
    from dualat.data import get_dataset, test_transform
    from dualat.generate import indices_sha256

    if name not in OOD_SPLITS:
        raise ValueError(f"evaluate.ood_sets: unknown set {name!r} (known: {', '.join(OOD_SPLITS)})")
    e, size, dataset = cfg.evaluate, cfg.data.image_size, cfg.data.dataset
    if name == "noise":  # drawn at the ID size directly: resizing would smooth the noise
        ds = get_dataset("noise", n=e.ood_n, size=size, seed=e.seed)
    else:
        same_size = OOD_NATIVE_SIZE.get(name) == size
        transform = test_transform(dataset) if same_size else test_transform(dataset, resize=True)
        ds = get_dataset(name, OOD_SPLITS[name], pipeline.root(cfg), transform)  # image files stay unread
    indices = draw_indices(len(ds), e.ood_n, e.seed)
    x = torch.stack([ds[int(i)][0] for i in indices])
    digest = indices_sha256(indices)
    return x, {"seed": e.seed, "set_size": len(ds), "indices_sha256": digest, "provenance": ds.provenance}


def draw_indices(set_size: int, n: int, seed: int) -> np.ndarray:
    """min(n, set_size) distinct indices (sorted, int64) drawn uniformly from range(set_size)."""
    n = min(n, set_size)
    return np.sort(np.random.default_rng(seed).choice(set_size, n, replace=False)).astype(np.int64)


# --- helpers --------------------------------------------------------------------------------------


@contextmanager
def _timed(seconds: dict, key: str) -> Iterator[None]:
    """Add the seconds spent inside the block to seconds[key]."""
    t0 = time.time()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.time() - t0


def _run(
    group: str,
    cfg: Config,
    method: str,
    model_path: str | Path,
    out_dir: str | Path,
    compute: Callable[[nn.Module, dict], dict],
    reuse: dict | None = None,
) -> dict:
    """Run `compute(model, seconds)` unless the model or a data source is missing; write
    out_dir/<group>.json. With `reuse` (what else the numbers depend on; None = never reuse, e.g.
    for a caller's own feature function) a record of the same key (`_record_key`) is returned as
    it is."""
    from dualat.data import DataMissingError

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0, seconds = time.time(), {}
    external = _is_external(cfg, method, model_path)
    if external and not Path(model_path).is_file():
        raise FileNotFoundError(f"checkpoint {model_path} not found ({_model_choice(cfg, method, model_path)})")
    # a trained model's folder says whether its stage computed it; an external file has no stage
    reason = None if external else pipeline.read_status(Path(model_path).parent)
    key = _record_key(group, cfg, method, model_path) | reuse if reason is None and reuse is not None else None
    previous = out_dir / f"{group}.json"
    if key is not None and previous.is_file():
        record = read_record(previous)
        if record.get("extra", {}).get("key") == to_jsonable(key):
            return record["metrics"]  # the same model, settings, data and code: nothing to redo
    metrics = None
    if reason is None:
        model = pipeline.load_model(cfg, model_path)
        check_finite_outputs(model, cfg, model_path)
        try:
            metrics = compute(model, seconds)
        except DataMissingError as err:
            reason = _missing(err)
    if metrics is None:
        metrics = _not_computed(group, cfg, reason)
    write_record(
        previous,
        metrics,
        config=to_dict(cfg),
        checkpoint=model_path,
        extra={"method": method, "dataset": cfg.data.dataset, "seconds": seconds, "key": key}
        | {"model_file": _model_choice(cfg, method, model_path)}
        | {"model_source": _model_source(cfg, method, model_path, external)}
        | {"data_provenance": _data_provenance(cfg)},
        wall_seconds=time.time() - t0,
    )
    return metrics


def _record_key(group: str, cfg: Config, method: str, model_path: str | Path) -> dict:
    """What an evaluation's numbers depend on: settings, checkpoint bytes, data files, code."""
    from dualat.data.fingerprint import fingerprint
    from dualat.records import sha256_file
    from dualat.runs import NOT_EVALUATION_CODE, code_hash

    names = list(dict.fromkeys([cfg.data.dataset, cfg.data.ood, *cfg.evaluate.ood_sets]))
    return {
        "group": group,
        "method": method,
        "config": to_dict(cfg),
        "checkpoint_sha256": sha256_file(model_path),
        "data": fingerprint(names, cfg.data_root)["sha256"],
        "code": code_hash(NOT_EVALUATION_CODE),
    }


def _model_choice(cfg: Config, method: str, model_path: str | Path) -> str:
    """Which file was evaluated and why (the pipeline's selected model, or a user's file)."""
    selected, why = pipeline.selected_model(cfg, method)
    return why if Path(model_path) == selected else f"{model_path}: given by the caller"


def _is_external(cfg: Config, method: str, model_path: str | Path) -> bool:
    """True for a file not trained by this pipeline: the file of `evaluate.checkpoints.<method>`,
    or a caller's file without a training status.json beside it (e.g. a released checkpoint)."""
    path = Path(model_path)
    if getattr(cfg.evaluate.checkpoints, method) and path == pipeline.selected_model(cfg, method)[0]:
        return True
    return path != pipeline.trained_model(cfg, method)[0] and not (path.parent / "status.json").is_file()


def _model_source(cfg: Config, method: str, model_path: str | Path, external: bool) -> str:
    """Where the evaluated model came from, for records and tables: "trained here (<file>: why)"
    or "external: <path> (sha256 <hex>)"."""
    from dualat.records import sha256_file

    if external:
        return f"external: {model_path} (sha256 {sha256_file(model_path)})"
    return f"trained here ({_model_choice(cfg, method, model_path)})"


def _data_provenance(cfg: Config) -> dict:
    """Where each data set of the evaluation comes from and whether losslessly (README, Data)."""
    from dualat.data import describe

    base, e = pipeline.root(cfg), cfg.evaluate
    sets = {name: describe(name, OOD_SPLITS[name], base, seed=e.seed) for name in e.ood_sets}
    return pipeline.data_provenance(cfg) | {"ood_sets": sets}


def check_finite_outputs(model: nn.Module, cfg: Config, model_path: str | Path, n: int = 16) -> None:
    """Stop before any work when the model's weights or its logits on `n` uniform-noise images
    of the data's size are NaN/inf (a diverged run would otherwise give FID numbers of NaN images
    or crash deep inside AutoAttack or sklearn)."""
    bad = [name for name, p in model.state_dict().items() if p.dtype.is_floating_point and not torch.isfinite(p).all()]
    dev = next(model.parameters()).device
    x = torch.rand(n, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        finite = bool(torch.isfinite(model(x.to(dev))).all())
    if bad or not finite:
        where = f" (non-finite tensors: {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else ""
        raise ValueError(
            f"model output is NaN/inf for {model_path}{where}; it cannot be evaluated. "
            "Retrain it (a NaN/inf stop keeps the last good last.pt) or evaluate another checkpoint."
        )


def _autoattack_state(out_dir: Path, model_path: str | Path, settings: dict) -> Path:
    """out_dir/autoattack_state.json, cleared when it was made for another checkpoint or settings.

    The state's own check covers the data and the attack settings but not the model: without this
    a retrained model would resume (and report) the previous model's per-sample results.
    """
    import json

    from dualat.records import atomic_open, sha256_file

    state, key_path = out_dir / "autoattack_state.json", out_dir / "autoattack_state.key.json"
    key = {"checkpoint_sha256": sha256_file(model_path)} | settings
    if not key_path.is_file() or json.loads(key_path.read_text()) != key:
        state.unlink(missing_ok=True)
        with atomic_open(key_path, "w") as f:
            json.dump(key, f)
    return state


def _not_computed(group: str, cfg: Config, reason: NotComputed) -> dict:
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS[group], reason)
    if group == "ood":
        metrics["sets"] = dict.fromkeys(cfg.evaluate.ood_sets, reason)
    return metrics


def _missing(err: Exception) -> NotComputed:
    """NotComputed for a DataMissingError: the dataset and the paths tried."""
    tried = getattr(err, "tried", None)
    if tried:
        return NotComputed(f"{err.dataset}: data not found (tried {', '.join(tried)}; see README, Data)")
    return NotComputed(str(err).splitlines()[0])


def _nan_to_none(values: np.ndarray) -> list:
    """A list for JSON, with NaN (empty reliability bins) as None."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in np.asarray(values).tolist()]


def _chunks(n: int, batch_size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    starts = range(0, n, batch_size)
    return tqdm([(s, min(s + batch_size, n)) for s in starts], desc=desc, disable=not progress)


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int, dev, progress: bool):
    """fn over batches of x (N, ...) moved to `dev`; results concatenated on the CPU."""
    return torch.cat([fn(x[a:b].to(dev)).cpu() for a, b in _chunks(len(x), batch_size, progress, "attack")])


def _probs(model: nn.Module, x: torch.Tensor, dev) -> torch.Tensor:
    from dualat.metrics import predict_logits

    return torch.softmax(predict_logits(model, x, len(x), dev), 1)


def _first_test(cfg: Config, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images (0 = all), reusing x, y (the first data.n_test) where they suffice."""
    if n != 0 and n <= len(x):
        return x[:n], y[:n]
    if cfg.data.n_test == 0:  # x is already the whole test set
        return x, y
    return pipeline.stack(pipeline.test_set(cfg, n=n))


def _fid(feats: np.ndarray, ref_stats_path: str | Path) -> float:
    from dualat.metrics import fid_to_reference

    return fid_to_reference(feats, ref_stats_path)


def _fid_protocol(cfg: Config, ref_stats_path: str | Path, weights: dict) -> dict:
    """How every FID of the record was computed: mode, N, reference (path and key), weights."""
    key = pipeline.fid_ref_key(cfg)
    protocol = {"mode": cfg.sample.fid_mode, "n": cfg.sample.n_samples}
    protocol["reference"] = {"path": str(ref_stats_path), "key": key}
    protocol["weights"] = weights["path"]
    protocol["weights_sha256"] = weights["sha256"]
    if weights.get("missing") is not None:
        protocol["weights_missing"] = weights["missing"]
    return protocol


def _seed_metrics(seed: int, out: dict, ref_stats_path: str | Path, ref_feats: np.ndarray, s) -> dict:
    """FID and KID of one sampling seed's conditional and unconditional samples and of its seed
    images (the control); KID subsets drawn with the same seed."""
    from dualat.metrics import kid

    def both(feats: np.ndarray) -> tuple[float, dict]:
        return _fid(feats, ref_stats_path), kid(feats, ref_feats, s.kid_subsets, s.kid_subset_size, seed)

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

    def kid(values: list[dict]) -> dict:
        if any(isinstance(v["mean"], NotComputed) for v in values):
            return values[0]
        mean = float(np.mean([v["mean"] for v in values]))
        std = float(np.sqrt(np.mean([v["std"] ** 2 for v in values])))
        return {"mean": mean, "std": std, "subsets": values[0]["subsets"], "subset_size": values[0]["subset_size"]}

    result: dict[str, Any] = {}
    for kind in ("conditional", "unconditional"):
        result[f"fid_{kind}"], result[f"fid_{kind}_std"] = fid([r[f"fid_{kind}"] for r in per_seed])
        result[f"kid_{kind}"] = kid([r[f"kid_{kind}"] for r in per_seed])
    control_fid, control_std = fid([r["control"]["fid"] for r in per_seed])
    result["control"] = {
        "fid": control_fid,
        "fid_std": control_std,
        "kid": kid([r["control"]["kid"] for r in per_seed]),
    }
    return result


def _inception_score(images: torch.Tensor | None, is_weights: str | Path | None, dev, progress: bool):
    """{"mean", "std"} of the first seed's conditional samples, or NotComputed with the reason."""
    from dualat.metrics import inception_score

    if is_weights is None:
        return inception_score(torch.zeros(0, 3, 1, 1))  # NotComputed: how to supply the weights
    if not Path(is_weights).is_file():
        return NotComputed(f"Inception Score weights not found at {is_weights} (sample.is_weights)")
    score = inception_score(images, is_weights=is_weights, device=dev, progress=progress)
    return score if isinstance(score, NotComputed) else {"mean": score[0], "std": score[1]}


def _sample_report(
    model: nn.Module, source, indices: np.ndarray, cfg: Config, T: int, features: Features, dev, *,
    keep_all: bool, progress: bool,
) -> dict:  # fmt: skip
    """Features of the seed images x0 = source[indices] (the control), of their conditional
    (labels i mod K, Eq. 14) and unconditional (Eq. 8) samples after T steps; the first N_SHOW of
    each for the figures; with `keep_all` all conditional samples as uint8 (for IS).

    Seeds are read and sampled one batch at a time, so only features stay in memory.
    """
    from dualat.generate import balanced_labels, images_at
    from dualat.sampling import sample_conditional, sample_unconditional

    s = cfg.sample
    out: dict[str, Any] = {"seeds": [], "conditional": [], "unconditional": []}
    shown: dict[str, list] = {"seeds": [], "conditional": [], "unconditional": [], "labels": []}
    kept = []
    labels = balanced_labels(len(indices), cfg.data.num_classes)  # seed i -> label i mod K
    for start, stop in _chunks(len(indices), s.batch_size, progress, "sampling"):
        x0, y = images_at(source, indices[start:stop]).to(dev), labels[start:stop].to(dev)  # (B, C, H, W), (B,)
        x_c = sample_conditional(model, x0, y, T, s.step_size).cpu()  # Eq. 14
        x_u = sample_unconditional(model, x0, T, s.step_size).cpu()  # Eq. 8
        for key, x in (("seeds", x0.cpu()), ("conditional", x_c), ("unconditional", x_u)):
            out[key].append(features(x))
            if start < N_SHOW:
                shown[key].append(x[: N_SHOW - start])
        if start < N_SHOW:
            shown["labels"].append(y[: N_SHOW - start].cpu())
        if keep_all:
            kept.append((x_c * 255).round().to(torch.uint8))
    result = {key: np.concatenate(v) for key, v in out.items()}
    result["shown"] = {key: torch.cat(v) for key, v in shown.items()}
    result["all_conditional"] = torch.cat(kept) if keep_all else None
    return result


def _sample_grid(model: nn.Module, source, indices: np.ndarray, cfg: Config, features: Features, dev, progress):
    """({T: features}, {T: images}) of conditional samples at each T of `sample.steps_grid`
    (Table 8) from the seed images source[indices]; the images are the first N_SHOW, sorted by
    label. One trajectory continues from T to the next larger T: the sampler is deterministic,
    so x_T' = T' - T more steps from x_T."""
    from dualat.generate import balanced_labels, images_at
    from dualat.sampling import sample_conditional

    s, grid = cfg.sample, sorted(set(cfg.sample.steps_grid))
    out: dict[int, list] = {t: [] for t in grid}
    shown: dict[int, list] = {t: [] for t in grid}
    labels = balanced_labels(len(indices), cfg.data.num_classes)
    for start, stop in _chunks(len(indices) if grid else 0, s.batch_size, progress, "grid"):
        x, y, done = images_at(source, indices[start:stop]).to(dev), labels[start:stop].to(dev), 0
        for t in grid:
            x = sample_conditional(model, x, y, t - done, s.step_size)
            done = t
            out[t].append(features(x.cpu()))
            if start < N_SHOW:
                shown[t].append(x[: N_SHOW - start].cpu())
    order = torch.argsort(labels[:N_SHOW], stable=True)  # as many as are shown: min(N_SHOW, n)
    images = {t: torch.cat(v)[order] for t, v in shown.items() if v}
    return {t: np.concatenate(f) for t, f in out.items() if f}, images


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
        _save_grid(shown[key][order], out_dir / f"{name}.png", 10)


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)


def _save_reliability(data: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    from dualat.metrics import plot_reliability

    fig = Figure(figsize=(4, 4), layout="constrained")
    plot_reliability(fig.subplots(), data, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
