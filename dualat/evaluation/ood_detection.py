"""OOD detection (group "ood", Tables 10-12, A.4): AUROC of max_y p(y|x) and -E(x) between the
test set and each OOD test set, clean and with the OOD images attacked to raise the score."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dualat import datasets, distributed, launch
from dualat.attacks import pgd_logsumexp, pgd_uniform_ce
from dualat.config import Config
from dualat.data import DataMissingError
from dualat.evaluation.ood_sets import ood_images
from dualat.evaluation.runner import missing, over_batches, run, timed
from dualat.metrics import auroc, predict_logits, score_max_prob, score_neg_energy
from dualat.model_io import device
from dualat.records import atomic_open

# score -> (its function of the logits, the attack that raises it on OOD images)
SCORES = {"max_prob": (score_max_prob, pgd_uniform_ce), "neg_energy": (score_neg_energy, pgd_logsumexp)}


def ood(cfg: Config, method: str, model_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """OOD detection AUROC (ID = the first `data.n_test` test images, positive) against
    `evaluate.ood_n` images drawn at random (`ood_sets.ood_images`) from each set in
    `evaluate.ood_sets`, for the scores max_y p(y|x) and -E(x) = logsumexp f(x); clean, and with
    each OOD image attacked (L2 PGD, `evaluate.ood_attack`) to raise the score it is judged by.
    Each set's cell records its draw (seed, set size, sha256 of the indices, provenance); a
    missing set gets NotComputed in its cell.

    Writes out_dir/ood.json and out_dir/scores.npz (every score: "id/<score>",
    "<set>/<score>/clean", "<set>/<score>/adversarial"; what `dualat.show.ood` plots).
    With `compute` asking for several processes this call runs torchrun; the attacks are split
    by index ranges and merged (docs/gpus.md).
    """
    if launch.wanted(cfg):
        paths = {"model_path": str(model_path), "out_dir": str(out_dir)}
        return launch.run("ood", cfg, out_dir, method=method, progress=progress, **paths)
    compute = partial(ood_metrics, cfg=cfg, progress=progress, scores_path=Path(out_dir) / "scores.npz")
    return run("ood", cfg, method, model_path, out_dir, compute, reuse={})


def ood_metrics(
    model: nn.Module, seconds: dict, *, cfg: Config, progress: bool, scores_path: Path | None = None
) -> dict:
    """The metrics of `ood` for a loaded model; seconds per OOD set are added to `seconds`; the
    scores themselves go to `scores_path` (npz) when given."""
    settings, dev = cfg.evaluate, device()
    x_id, _ = datasets.stack(datasets.test_set(cfg))
    logits_id = predict_logits(model, x_id, settings.batch_size, dev, progress)
    sets: dict[str, Any] = {}
    s_ids = {key: score(logits_id) for key, (score, _) in SCORES.items()}  # the test set's, once
    scores = {f"id/{key}": s_id.cpu().numpy() for key, s_id in s_ids.items()}
    for name in settings.ood_sets:
        try:
            x_ood, draw = ood_images(cfg, name)
        except DataMissingError as err:
            sets[name] = missing(err)
            continue
        logits_clean = predict_logits(model, x_ood, settings.batch_size, dev)
        cell: dict[str, Any] = {"n": len(x_ood)} | draw
        with timed(seconds, name):
            for key, (score, attack) in SCORES.items():
                attack_fn, desc = partial(attack, model, cfg=settings.ood_attack), f"attack on {name} raising {key}"
                x_adv = _batched(attack_fn, x_ood, settings.batch_size, progress, desc)
                logits_adv = predict_logits(model, x_adv, settings.batch_size, dev)
                s_id, s_clean, s_adv = s_ids[key], score(logits_clean), score(logits_adv)
                cell[key] = {"clean": auroc(s_id, s_clean), "adversarial": auroc(s_id, s_adv)}
                scores |= {
                    f"{name}/{key}/clean": s_clean.cpu().numpy(),
                    f"{name}/{key}/adversarial": s_adv.cpu().numpy(),
                }
        sets[name] = cell
    if scores_path is not None and distributed.is_main():
        with atomic_open(scores_path, "wb") as f:
            np.savez(f, **scores)
    return {"sets": sets, "n_id": len(x_id), "ood_n": settings.ood_n}


def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int, progress: bool, desc: str = "attack"
):
    """fn over batches of x (N, ...) moved to the model's device; results concatenated on the CPU;
    the progress lines read `desc` (the OOD set and the score the attack raises). Under torchrun
    each process attacks its batches (the attacks start from x: deterministic) and they are merged."""
    dev = device()
    return over_batches(lambda a, b: fn(x[a:b].to(dev)).cpu(), len(x), batch_size, progress, desc)
