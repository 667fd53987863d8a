"""What every evaluation group shares: `run` loads the model, computes the group's metrics (or
says why they are not computed) and writes the one record `out_dir/<group>.json`; a record of the
same key (evaluation settings, checkpoint sha256, data fingerprint, evaluation code) is reused as
it is. Checked before any work: a user's checkpoint file (exists, is a checkpoint, holds the
network of params.yaml) and that the results folder can be written. A "not computed" record never
replaces a computed one (the stage fails with `artifacts.StageRefused` instead).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualat import artifacts, datasets, distributed, model_io, runs
from dualat.config import METHODS, Config, ConfigError, to_dict
from dualat.data import DataMissingError, describe
from dualat.data.fingerprint import fingerprint
from dualat.evaluation.ood_sets import OOD_SPLITS
from dualat.progress import bar
from dualat.records import NotComputed, atomic_open, read_record, sha256_file, to_jsonable, write_record

# The params sections an evaluation reads (besides `profile`); training keys are not among them.
EVALUATION_SECTIONS = ("data", "model", "sample", "evaluate")
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
        "fid_modes",  # {FID mode: FID/KID over seeds, protocol}: sample.fid_mode and sample.fid_second_mode
        "per_seed",
        "seeds",
        "grid",
    ),
    "counterfactuals": ("eps", "fid", "confidence", "per_class_fid", "n"),
    "ood": ("sets", "n_id", "ood_n"),
}

# The number that says whether a record of each group was computed (`computed`).
PRIMARY = {"accuracy": "clean_acc", "generation": "fid_conditional", "counterfactuals": "fid", "ood": "sets"}

Compute = Callable[[nn.Module, dict], dict]  # (model, seconds per part) -> the group's metrics


def run(
    group: str,
    cfg: Config,
    method: str,
    model_path: str | Path,
    out_dir: str | Path,
    compute: Compute,
    reuse: dict | None = None,
) -> dict:
    """Run `compute(model, seconds)` unless the model or a data source is missing; write
    out_dir/<group>.json. With `reuse` (what else the numbers depend on; None = never reuse, e.g.
    for a caller's own feature function) a record of the same key (`record_key`) is returned as
    it is. CheckpointError for a wrong external file and StageRefused for a folder that cannot be
    written, both before any work; StageRefused instead of overwriting a computed record with a
    "not computed" one (`keep_computed`)."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    external = _is_external(cfg, method, model_path)
    if external:  # before any work: exists, is a checkpoint, holds the network of params.yaml
        model_io.check_file(cfg, model_path, _source(cfg, method, model_path))
    out_dir = Path(out_dir)
    t0, seconds = time.time(), {}
    # a trained model's folder says whether its stage computed it; an external file has no stage
    reason = untrained = None if external else artifacts.read_status(Path(model_path).parent)
    key = record_key(group, cfg, method, model_path) | reuse if reason is None and reuse is not None else None
    previous = out_dir / f"{group}.json"
    if key is not None and previous.is_file():
        record = read_record(previous)
        if record.get("extra", {}).get("key") == to_jsonable(key):
            write_flat_metrics(out_dir, group, record["metrics"])  # DVC removed it before the rerun
            return record["metrics"]  # the same model, settings, data and code: nothing to redo
    artifacts.check_writable(out_dir)  # before the work, not after it
    metrics = None
    if reason is None:
        model = model_io.load_model(cfg, model_path, source=_source(cfg, method, model_path) if external else None)
        check_finite_outputs(model, cfg, model_path)
        try:
            metrics = compute(model, seconds)
        except DataMissingError as err:
            reason = missing(err)
    if metrics is None:
        metrics = not_computed(group, cfg, reason)
    if not computed(group, metrics):
        keep_computed(group, previous, metrics)
    if distributed.is_main():  # under torchrun the ranks hold the same merged metrics
        write_record(
            previous,
            metrics,
            config=to_dict(cfg),
            checkpoint=model_path,
            extra={"method": method, "dataset": cfg.data.dataset, "seconds": seconds, "key": key}
            | {"processes": distributed.world_size()}
            | {"model_file": _model_choice(cfg, method, model_path)}
            | {"model_source": _model_source(cfg, method, model_path, external, untrained)}
            | {"data_provenance": _data_provenance(cfg)},
            wall_seconds=time.time() - t0,
        )
        write_flat_metrics(out_dir, group, metrics)
    distributed.barrier()
    return metrics


def computed(group: str, metrics: dict) -> bool:
    """Whether the group's main number (`PRIMARY`) was computed (for OOD: any set's)."""
    value = metrics.get(PRIMARY[group])
    values = value.values() if isinstance(value, dict) else [value]
    return any(v is not None and not isinstance(v, NotComputed) for v in values)


def keep_computed(group: str, previous: Path, metrics: dict) -> None:
    """StageRefused when a "not computed" record would overwrite a computed one at `previous`
    (e.g. the data folder is briefly missing): the stage fails and the numbers stay; a record
    that was never computed is written as before, so the report keeps its cells."""
    if previous.is_file() and computed(group, read_record(previous)["metrics"]):
        reason = metrics[PRIMARY[group]]
        reason = next(iter(reason.values())) if isinstance(reason, dict) else reason
        raise artifacts.StageRefused(
            f"{getattr(reason, 'reason', reason)}; {previous} keeps its numbers of an earlier run: restore what "
            "is missing and rerun (or delete the record to record it as not computed)"
        )


def record_key(group: str, cfg: Config, method: str, model_path: str | Path) -> dict:
    """What an evaluation's numbers depend on: the evaluated checkpoint's bytes, the settings
    evaluation reads (`EVALUATION_SECTIONS`; not the training keys: a changed stage2.images that
    leaves the checkpoint byte-identical reuses the record), data files and evaluation code."""
    names = list(dict.fromkeys([cfg.data.dataset, cfg.data.ood, *cfg.evaluate.ood_sets]))
    settings = to_dict(cfg)
    return {
        "group": group,
        "method": method,
        "config": {k: settings[k] for k in ("profile", *EVALUATION_SECTIONS)},
        "checkpoint_sha256": sha256_file(model_path),
        "data": fingerprint(names, cfg.data_root)["sha256"],
        "code": evaluation_code_hash(),
    }


def metrics_path(out_dir: str | Path) -> Path:
    """The flat metrics file of the evaluation in `out_dir`, beside that folder (dvc.yaml lists it
    under the stage's `metrics:`; a file inside the stage's output folder would overlap it)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.metrics.json"


def flat_metrics(group: str, metrics: dict) -> dict[str, float]:
    """The headline numbers of a group's metrics as one flat {name: number} (for `dvc metrics`,
    `dvc exp show`); a value that was not computed is left out, and a group without any number
    reads {"not_computed": <the first reason's first sentence>} (the full reason, which may name
    this machine's folders, stays in the record)."""
    pick = {k: metrics.get(k) for k in FLAT_KEYS.get(group, ())}
    if group == "accuracy":
        pick["autoattack_acc"] = _get(metrics, "autoattack", "robust_acc")
    if group == "generation":
        for kind in ("conditional", "unconditional"):
            pick[f"kid_{kind}"] = _get(metrics, f"kid_{kind}", "mean")
            pick[f"kid_{kind}_std"] = _get(metrics, f"kid_{kind}", "std")
        pick["inception_score"] = _get(metrics, "inception_score", "mean")
    if group == "counterfactuals" and isinstance(metrics.get("eps"), list):
        for i, eps in enumerate(metrics["eps"]):
            pick[f"fid_eps{eps:g}"] = _get(metrics, "fid", i)
            pick[f"confidence_eps{eps:g}"] = _get(metrics, "confidence", i)
    if group == "ood":
        for name, cell in (metrics.get("sets") or {}).items():
            for score, aurocs in cell.items() if isinstance(cell, dict) else ():
                for kind in ("clean", "adversarial") if isinstance(aurocs, dict) else ():
                    pick[f"auroc_{name}_{score}_{kind}"] = aurocs.get(kind)
    flat = {k: v for k, v in pick.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    reasons = [v for v in _leaves(metrics) if isinstance(v, NotComputed)]
    return flat if flat or not reasons else {"not_computed": reasons[0].reason.split(". ", 1)[0]}


FLAT_KEYS = {
    "accuracy": ("clean_acc", "pgd_acc", "ece", "n_test"),
    "generation": ("fid_conditional", "fid_conditional_std", "fid_unconditional", "fid_unconditional_std", "n_samples"),
    "counterfactuals": ("n",),
    "ood": ("n_id",),
}


def write_flat_metrics(out_dir: str | Path, group: str, metrics: dict) -> Path:
    """`flat_metrics` written to `metrics_path(out_dir)` (atomically; NaN as null)."""
    flat = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in flat_metrics(group, metrics).items()
    }
    path = metrics_path(out_dir)
    with atomic_open(path, "w") as f:
        f.write(json.dumps(flat, indent=1) + "\n")
    return path


def _get(tree: Any, *keys: Any) -> Any:
    """tree[k0][k1]..., or None where a level is missing."""
    for k in keys:
        try:
            tree = tree[k]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _leaves(tree: Any) -> Iterator[Any]:
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


def evaluation_code_hash() -> str:
    """The hash of the code an evaluation runs (`runs.evaluation_code_exclusions`): an edit of
    train.py or of a log line in data/download.py does not recompute evaluation records."""
    return runs.code_hash(runs.evaluation_code_exclusions())


@contextmanager
def timed(seconds: dict, key: str) -> Iterator[None]:
    """Add the seconds spent inside the block to seconds[key]."""
    t0 = time.time()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.time() - t0


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


def not_computed(group: str, cfg: Config, reason: NotComputed) -> dict:
    """Every metric of `group` set to `reason` (the OOD group: every set of `evaluate.ood_sets`)."""
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS[group], reason)
    if group == "ood":
        metrics["sets"] = dict.fromkeys(cfg.evaluate.ood_sets, reason)
    return metrics


def missing(err: Exception) -> NotComputed:
    """NotComputed for a DataMissingError: the dataset and the paths tried."""
    tried = getattr(err, "tried", None)
    if tried:
        return NotComputed(f"{err.dataset}: data not found (tried {', '.join(tried)}; see docs/data.md)")
    return NotComputed(str(err).splitlines()[0])


def merged(pieces: list, cat: Callable[[list], Any]) -> Any:
    """The `pieces` (arrays or tensors, in item order) of every process, in rank order, joined by
    `cat` (np.concatenate or torch.cat): what one process would have made from its list when
    each rank worked on its `distributed.spans`. None when no process has a piece."""
    every = [piece for rank_pieces in distributed.gather(pieces) for piece in rank_pieces]
    return cat(every) if every else None


def over_batches(
    fn: Callable[[int, int], torch.Tensor], n: int, batch_size: int, progress: bool = False, desc: str = ""
) -> torch.Tensor:
    """torch.cat of fn(start, stop) over the batches of range(n), as one process computes it;
    under torchrun each process computes its `distributed.spans` and the results are merged."""
    pieces = [fn(start, stop) for start, stop in bar(distributed.spans(n, batch_size), desc=desc, enabled=progress)]
    return merged(pieces, torch.cat)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """A PNG of `images` (N, C, H, W) in [0, 1], `nrow` per row, on a white 2-pixel grid (rank 0 writes)."""
    if not distributed.is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    from torchvision.utils import save_image  # lazy: ~1.3 s to import, needless without data

    save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)


def _model_choice(cfg: Config, method: str, model_path: str | Path) -> str:
    """Which file was evaluated and why (the pipeline's selected model, or a user's file)."""
    selected, why = model_io.selected_model(cfg, method)
    return why if Path(model_path) == selected else f"{model_path}: given by the caller"


def _source(cfg: Config, method: str, model_path: str | Path) -> str:
    """Where an external file's name came from, for one-line errors about it."""
    from_params = (
        getattr(cfg.evaluate.checkpoints, method) and Path(model_path) == model_io.selected_model(cfg, method)[0]
    )
    return f"evaluate.checkpoints.{method}" if from_params else "a file given by the caller"


def _is_external(cfg: Config, method: str, model_path: str | Path) -> bool:
    """True for a file not trained by this pipeline: the file of `evaluate.checkpoints.<method>`,
    or a caller's file without a training status.json beside it (e.g. a released checkpoint)."""
    path = Path(model_path)
    if getattr(cfg.evaluate.checkpoints, method) and path == model_io.selected_model(cfg, method)[0]:
        return True
    return path != model_io.trained_model(cfg, method)[0] and not (path.parent / "status.json").is_file()


def _model_source(
    cfg: Config, method: str, model_path: str | Path, external: bool, untrained: NotComputed | None
) -> str:
    """Where the evaluated model came from, for records and tables: "trained here (<file>: why)",
    "external: <path> (sha256 <hex>)", or "no model: <reason>" when its training stage computed
    none (`untrained`, e.g. the dataset's data is missing)."""
    if external:
        return f"external: {model_path} (sha256 {sha256_file(model_path)})"
    if untrained is not None:
        return f"no model: {untrained.reason}"
    return f"trained here ({_model_choice(cfg, method, model_path)})"


def _data_provenance(cfg: Config) -> dict:
    """Where each data set of the evaluation comes from and whether losslessly (docs/data.md)."""
    base, settings = datasets.roots(cfg), cfg.evaluate
    sets = {name: describe(name, OOD_SPLITS[name], base, seed=settings.seed) for name in settings.ood_sets}
    return datasets.data_provenance(cfg) | {"ood_sets": sets}
