"""The classifier's numbers (group "accuracy"): clean, PGD and AutoAttack (L2) accuracy, ECE and
the reliability diagram (Tables 1, 2, 7; Figure 3)."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dualat import datasets, distributed, launch
from dualat.attacks import pgd_ce
from dualat.config import Config
from dualat.evaluation.runner import run, timed
from dualat.metrics import autoattack_accuracy, pgd_accuracy, plot_reliability, predict_logits, reliability_diagram_data
from dualat.model_io import device
from dualat.records import atomic_open, sha256_file

# AutoAttack's unit of work and of resume (metrics.autoattack_accuracy's chunk_size): processes
# take whole chunks, so each chunk is attacked with the same images and seed as in one process.
AUTOATTACK_CHUNK = 1000


def accuracy(cfg: Config, method: str, model_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Clean, PGD and AutoAttack (L2) accuracy, ECE and the reliability diagram of the checkpoint
    `model_path` on the first `data.n_test` test images (AutoAttack: the first `autoattack_n`).

    Writes out_dir/accuracy.json, out_dir/reliability.png and the resumable AutoAttack state
    out_dir/autoattack_state.json.

    With `compute` asking for several processes this call runs torchrun: PGD splits the test set
    by index ranges, AutoAttack by its chunks of AUTOATTACK_CHUNK images (each chunk attacked as
    one process attacks it, with the seed `evaluate.seed`); counts are summed (docs/gpus.md).
    """
    if launch.wanted(cfg):
        paths = {"model_path": str(model_path), "out_dir": str(out_dir)}
        return launch.run("accuracy", cfg, out_dir, method=method, progress=progress, **paths)
    compute = partial(
        accuracy_metrics, cfg=cfg, method=method, model_path=model_path, out_dir=Path(out_dir), progress=progress
    )
    return run("accuracy", cfg, method, model_path, out_dir, compute, reuse={})


def accuracy_metrics(
    model: nn.Module, seconds: dict, *, cfg: Config, method: str, model_path: str | Path, out_dir: Path, progress: bool
) -> dict:
    """The metrics of `accuracy` for a loaded model; seconds per part are added to `seconds`."""
    settings, dev = cfg.evaluate, device()
    x, y = datasets.stack(datasets.test_set(cfg))  # (N, C, H, W), (N,)
    with timed(seconds, "clean"):
        logits = predict_logits(model, x, settings.batch_size, dev, progress)
        clean_acc = (logits.argmax(1) == y).float().mean().item()
    with timed(seconds, "pgd"):  # this process's batches (all without torchrun), counts summed
        attack = partial(pgd_ce, cfg=settings.pgd)
        lo, hi = _my_range(len(x), settings.batch_size)
        correct = pgd_accuracy(model, x[lo:hi], y[lo:hi], attack, settings.batch_size, dev, progress) if hi > lo else 0
        pgd_acc = sum(round(c * n) for c, n in distributed.gather((correct, hi - lo))) / len(x)
    with timed(seconds, "autoattack"):
        aa = _autoattack(model, cfg, x, y, model_path, out_dir, progress)
    rel = reliability_diagram_data(torch.softmax(logits, 1), y, settings.ece_bins)
    if distributed.is_main():
        _save_reliability(rel, out_dir / "reliability.png", f"{method}, {cfg.data.dataset}")
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


def _autoattack(
    model: nn.Module,
    cfg: Config,
    x: torch.Tensor,
    y: torch.Tensor,
    model_path: str | Path,
    out_dir: Path,
    progress: bool,
) -> dict:
    """AutoAttack (`evaluate.autoattack_version`, L2 radius `autoattack_eps`) on the first
    `evaluate.autoattack_n` test images, resumable from out_dir/autoattack_state.json."""
    settings = cfg.evaluate
    x_aa, y_aa = _first_test(cfg, x, y, settings.autoattack_n)
    attack = {
        "eps": settings.autoattack_eps,
        "version": settings.autoattack_version,
        "n": len(x_aa),
        "seed": settings.seed,
    }
    lo, hi = _my_range(len(x_aa), AUTOATTACK_CHUNK)  # whole chunks: each attacked as in one process
    state = _autoattack_state(out_dir, model_path, attack, (lo, hi) if distributed.world_size() > 1 else None)
    part = None
    if hi > lo:
        part = autoattack_accuracy(
            model, x_aa[lo:hi], y_aa[lo:hi], settings.autoattack_eps, version=settings.autoattack_version,
            batch_size=settings.batch_size, device=device(), seed=settings.seed, state_path=state,
            chunk_size=AUTOATTACK_CHUNK, progress=progress,
        )  # fmt: skip
    return _merge_autoattack([p for p in distributed.gather(part) if p is not None])


def _my_range(n: int, batch_size: int) -> tuple[int, int]:
    """The items [lo, hi) of this process's batches (`distributed.spans`): all of them in one process."""
    spans = distributed.spans(n, batch_size)
    return (spans[0][0], spans[-1][1]) if spans else (0, 0)


def _merge_autoattack(parts: list[dict]) -> dict:
    """One AutoAttack result from those of consecutive index ranges: accuracies weighted by their
    image counts (exact: each is a count / n), warnings in order, each once."""
    n = sum(p["n"] for p in parts)

    def mean(values: list[float]) -> float:
        return sum(round(v * p["n"]) for v, p in zip(values, parts)) / n

    if len(parts) == 1:
        return parts[0]
    return {
        "clean": mean([p["clean"] for p in parts]),
        "robust": mean([p["robust"] for p in parts]),
        "per_attack": {a: mean([p["per_attack"][a] for p in parts]) for a in parts[0]["per_attack"]},
        "n": n,
        "warnings": list(dict.fromkeys(w for p in parts for w in p["warnings"])),
    }


def _autoattack_state(out_dir: Path, model_path: str | Path, settings: dict, span: tuple[int, int] | None) -> Path:
    """out_dir/autoattack_state.json (autoattack_state.<lo>-<hi>.json for the images [lo, hi) of one
    of several processes), cleared when it was made for another checkpoint or settings.

    The state's own check covers the data and the attack settings but not the model: without this
    a retrained model would resume (and report) the previous model's per-sample results.
    """
    name = "autoattack_state" if span is None else f"autoattack_state.{span[0]}-{span[1]}"
    state, key_path = out_dir / f"{name}.json", out_dir / f"{name}.key.json"
    key = {"checkpoint_sha256": sha256_file(model_path)} | settings
    if not key_path.is_file() or json.loads(key_path.read_text()) != key:
        state.unlink(missing_ok=True)
        with atomic_open(key_path, "w") as f:
            json.dump(key, f)
    return state


def _first_test(cfg: Config, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images (0 = all), reusing x, y (the first data.n_test) where they suffice."""
    if n != 0 and n <= len(x):
        return x[:n], y[:n]
    if cfg.data.n_test == 0:  # x is already the whole test set
        return x, y
    return datasets.stack(datasets.test_set(cfg, n=n))


def _nan_to_none(values: np.ndarray) -> list:
    """A list for JSON, with NaN (empty reliability bins) as None."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in np.asarray(values).tolist()]


def _save_reliability(data: dict, path: Path, title: str) -> None:
    """The reliability diagram (Figure 3) as a 4 x 4 inch PNG."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    plot_reliability(fig.subplots(), data, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
