"""Training: stage 1 (standard AT, BN in train mode), the RATIO baseline, and stage 2 (Dual-AT,
Algorithm 1, BN frozen). Each stage is one step function (`stage1_step`, `stage2_step`) and one
loop that draws batches, steps, and leaves the rest to `dualat.bookkeeping.Run`: EMA, evaluation
and selection of checkpoints, resume, the NaN/inf stop. Loops return their history.

A loop takes infinite batch streams (objects with `__next__`, `state_dict`, `load_state_dict`,
see `dualat.data`), so resuming restores the exact batches an uninterrupted run would see.

Under torchrun (`dualat.distributed`) each rank gets its slice of the global batch, the loss
pass runs through DDP, every rank keeps identical weights, EMA, curriculum and history, and only
rank 0 writes files (docs/gpus.md says which numbers depend on the number of ranks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from dualat import distributed, runs
from dualat.attacks import pgd_ce, pgd_uniform_ce
from dualat.bookkeeping import NONFINITE, Criterion, NonFiniteLoss, Run
from dualat.config import (
    AttackConfig,
    EMAConfig,
    OptimConfig,
    RatioConfig,
    SamplerConfig,
    Stage1Config,
    Stage2Config,
    to_dict,
)
from dualat.curriculum import Curriculum
from dualat.ema import EMA
from dualat.energy import joint_energy
from dualat.losses import at_ce, bce_energy, pairwise_auc, ratio_ood
from dualat.sampling import attack_and_sample

# NONFINITE and NonFiniteLoss are re-exported: callers catch the stop through this module.
__all__ = [
    "NONFINITE",
    "NonFiniteLoss",
    "Run",
    "freeze_bn",
    "make_optimizer",
    "make_schedule",
    "stage1_step",
    "stage2_step",
    "train_stage1",
    "train_stage2",
]

# The selected checkpoints: stage 1 / RATIO by PGD robust accuracy (stage 2 starts from it),
# stage 2 by FID and by robust accuracy.
STAGE1_SELECTION = (Criterion("robust_acc", "best.pt", start=-1.0),)
STAGE2_SELECTION = (
    Criterion("fid", "best_fid.pt", lower=True, step_key="fid_step"),
    Criterion("robust_acc", "best_acc.pt", start=-1.0, step_key="acc_step"),
)


# --- pieces ---------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over all parameters of `model` with the momentum, Nesterov and weight decay of `cfg`."""
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def make_schedule(
    opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-batch LR schedule: cosine over all steps, step decay at epoch milestones, or constant."""
    if cfg.schedule == "cosine":
        factor = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))  # noqa: E731
    elif cfg.schedule == "step":
        factor = lambda s: cfg.gamma ** sum(s >= m * steps_per_epoch for m in cfg.milestones)  # noqa: E731
    else:
        factor = lambda s: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _keep_eval(module: nn.Module, _inputs) -> None:
    module.training = False  # returns None: the inputs pass unchanged


def freeze_bn(model: nn.Module) -> nn.Module:
    """Put every BatchNorm in eval mode for good: a forward pre-hook re-asserts eval mode, so
    running statistics never change even under `model.train()` (stage 2, Sec. 3.5)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if not getattr(m, "_dualat_frozen", False):
                m.register_forward_pre_hook(_keep_eval)
                m._dualat_frozen = True
    return model


def new_run(model: nn.Module, optim: OptimConfig, ema: EMAConfig, steps_per_epoch: int, total: int, **fields) -> Run:
    """A fresh `Run` of `total` steps: SGD with its schedule and (when on) the EMA of `model`;
    `fields` are the other `Run` fields (streams, out_dir, config, key, criteria, curriculum)."""
    opt = make_optimizer(model, optim)
    schedule = make_schedule(opt, optim, steps_per_epoch, total)
    average = EMA(model, ema.decay, ema.warmup) if ema.enabled else None
    return Run(model, opt, schedule, average, lr=optim.lr, total=total, **fields)


# --- stage 1 and RATIO ----------------------------------------------------------------------------


def stage1_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    attack: AttackConfig,
    batch: tuple[torch.Tensor, torch.Tensor],
    ratio: RatioConfig | None = None,
    x_ood: torch.Tensor | None = None,
    loss_model: nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One stage-1 step on (x, y): L_AT-CE (Eq. 11) on PGD examples (Eq. 10), BN in train mode;
    with `ratio`, RATIO's loss at_weight * L_AT-CE + lam * CE(U, p(y|x'_ood)) on attacked OOD
    images x_ood (Eq. 13: 1 and 1; the released code: 0.5 and 0.5, `RatioConfig`).

    `loss_model` runs the loss pass (default `model`; a DDP wrapper averages the gradients); the
    BN running statistics are averaged over ranks. Returns (loss, stats) as device tensors.
    """
    x, y = batch
    inputs = [pgd_ce(model, x, y, attack)]  # x_adv; eval mode inside, train mode restored
    if ratio is not None:
        inputs.append(pgd_uniform_ce(model, x_ood, ratio.ood_attack))
    net = model if loss_model is None else loss_model
    logits = net(torch.cat(inputs))  # one BN-train-mode pass over in- and out-distribution
    loss, stats = at_ce(logits[: len(x)], y)
    if ratio is not None:
        l_ood, ood_stats = ratio_ood(logits[len(x) :])
        loss = ratio.at_weight * loss + ratio.lam * l_ood
        stats |= ood_stats
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    distributed.sync_buffers(model)  # the same BN statistics on every rank
    return loss, stats


def train_stage1(
    model: nn.Module,
    cfg: Stage1Config,
    train_stream: Iterator,
    steps_per_epoch: int,
    test_xy: tuple[torch.Tensor, torch.Tensor],
    out_dir: str | Path,
    *,
    ratio: RatioConfig | None = None,
    ood_stream: Iterator | None = None,
    config: dict | None = None,
    key: dict | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict:
    """Stage 1 (L_AT-CE, Eq. 11, BN in train mode); with `ratio` the RATIO loss (Eq. 13).

    Every `cfg.eval_every_epochs` epochs: out_dir/best.pt keeps the weights with the best PGD
    robust test accuracy (EMA weights when EMA is on, as stage 2 starts from them); last.pt
    (resume) is also saved every `checkpoint_every` steps. `stop_after` ends the loop early
    (to simulate a kill in tests). Returns {"history", "best", "steps", "seconds"}.

    Distributed: `train_stream` yields this rank's slice of each global batch; gradients are
    averaged by DDP; BN normalises with each rank's slice (its running statistics are averaged).
    """
    device = next(model.parameters()).device
    total, eval_every = cfg.epochs * steps_per_epoch, cfg.eval_every_epochs * steps_per_epoch
    net = distributed.wrap(model)  # for the loss pass (attacks use the bare model); rank 0's weights
    config = config or {"stage1": to_dict(cfg)} | ({"ratio": to_dict(ratio)} if ratio else {})
    run = new_run(
        model, cfg.optim, cfg.ema, steps_per_epoch, total, out_dir=out_dir, config=config,
        streams={"train": train_stream} | ({"ood": ood_stream} if ratio else {}),
        key=key or runs.resume_key(config, ("stage1", "ratio")), criteria=STAGE1_SELECTION,
    )  # fmt: skip
    if run.resume() and run.finished():
        return run.result()  # nothing to do: the files on disk are the result
    test_xy = tuple(t.to(device) for t in test_xy)
    run.start("stage 1" if ratio is None else "RATIO", progress)
    model.train()
    while run.running(stop_after):
        x, y = (t.to(device, non_blocking=True) for t in next(train_stream))
        x_ood = next(ood_stream)[0].to(device, non_blocking=True) if ratio is not None else None
        loss, stats = stage1_step(model, run.optimizer, cfg.attack, (x, y), ratio, x_ood, net)
        run.advance(loss)
        if run.step % eval_every == 0 or run.step == total:
            log = {"step": run.step, "epoch": run.step / steps_per_epoch, "lr": run.optimizer.param_groups[0]["lr"]}
            log |= {k: float(v) for k, v in distributed.all_mean_stats(stats).items()}
            run.evaluate(log, test_xy, cfg.attack)
        elif run.step % checkpoint_every == 0:
            run.checkpoint()
    return run.finish()


# --- stage 2 --------------------------------------------------------------------------------------


def stage2_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    cfg: Stage2Config,
    batch: tuple[torch.Tensor, ...],
    T: int,
    loss_model: nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One Dual-AT iteration (Algorithm 1) on (x, y, x_hat, y_hat, x0); BN must be frozen.

    `loss_model` runs the loss pass (default `model`): a DDP wrapper of `model` averages the
    gradients over ranks. Returns (loss, stats) with stats as device tensors (auc, bce, at_ce, ...).
    """
    x, y, x_hat, y_hat, x0 = batch
    B = x.shape[0]
    # amp_bf16: the attack/sampler passes (2T + 2K of the ~2T + 2K + 12 forward units of an
    # iteration) run under bf16 autocast too; images, gradient norms and steps stay fp32.
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.amp_bf16):
        # y' = labels of the x_hat batch: ancestral sampling from the data's label marginal
        x_adv, x_T = attack_and_sample(model, x, y, x0, y_hat, cfg.attack, T, cfg.sampler.step_size, cfg.fused)
        net = model if loss_model is None else loss_model
        logits = net(torch.cat([x_adv, x_hat, x_T])).float()  # BN frozen: one pass, same as three
    l_ce, stats = at_ce(logits[:B], y)
    logits_hat, logits_T = logits[B : B + len(x_hat)], logits[B + len(x_hat) :]
    l_bce, bce_stats = bce_energy(logits_hat, logits_T, cfg.sampler.bce_reduction)
    loss = l_ce + l_bce  # Eq. 12
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    # f(x_hat)[y_hat] and f(x_T)[y'] of the whole global batch: the AUC (hence T) of one process
    energies = torch.stack([-joint_energy(logits_hat.detach(), y_hat), -joint_energy(logits_T.detach(), y_hat)], 1)
    pos, neg = distributed.all_gather_cat(energies).unbind(1)  # one collective per step, not two
    stats |= bce_stats | {"auc": pairwise_auc(pos, neg), "loss": loss.detach()}
    return loss, stats


def make_curriculum(sampler: SamplerConfig, batch_size: int, device: torch.device) -> Curriculum:
    """The schedule of T, the sampler's step count (`dualat.curriculum`), from the sampler settings."""
    threshold = sampler.auc_threshold if sampler.curriculum == "auc" else sampler.loss_threshold
    return Curriculum(
        sampler.T_max, sampler.curriculum, threshold, sampler.auc_window_images, batch_size, device,
        sampler.curriculum_lag,
    )  # fmt: skip


def draw_stage2_batch(
    cls_stream: Iterator, gen_stream: Iterator, ood_stream: Iterator, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, ...]:
    """(x, y) ~ p_data with aggressive augmentation, (x_hat, y_hat) ~ p_data with mild
    augmentation, x0 ~ p_ood (Algorithm 1, lines 2-3), on `device`; y_hat doubles as y'."""
    x, y = next(cls_stream)
    x_hat, y_hat = next(gen_stream)
    x0 = next(ood_stream)[0]
    batch = tuple(t.to(device, non_blocking=True) for t in (x, y, x_hat, y_hat, x0))
    if channels_last:
        batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in batch)
    return batch


def train_stage2(
    model: nn.Module,
    cfg: Stage2Config,
    cls_stream: Iterator,
    gen_stream: Iterator,
    ood_stream: Iterator,
    test_xy: tuple[torch.Tensor, torch.Tensor],
    out_dir: str | Path,
    *,
    fid_fn: Callable[[nn.Module, int], float] | None = None,
    config: dict | None = None,
    key: dict | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict:
    """Stage 2 (Dual-AT, Eq. 12, Algorithm 1) from stage-1 weights already in `model`, for
    `cfg.images` images. Every `cfg.eval_every_images` images the EMA model (or the model
    without EMA) gets PGD robust accuracy and, with `fid_fn(model, n)`, the FID of n samples:
    out_dir/history.json (Figures 2 and 4), best_fid.pt and best_acc.pt (selected), last.pt.

    Distributed: `cfg.images` and `cfg.batch_size` are global (the streams yield this rank's
    slice); gradients are averaged by DDP (BN is frozen: the mean gradient of the global batch);
    the AUC is the global batch's and the other statistics are averaged over ranks (T equal on all).
    """
    device = next(model.parameters()).device
    freeze_bn(model)  # Sec. 3.5: BN in eval mode for good, with the statistics of stage 1
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model)  # for the loss pass, after freeze_bn: BN buffers never change
    B, total = cfg.batch_size, math.ceil(cfg.images / cfg.batch_size)
    config = config or {"stage2": to_dict(cfg)}
    run = new_run(
        model, cfg.optim, cfg.ema, 1, total, out_dir=out_dir, config=config,
        streams={"cls": cls_stream, "gen": gen_stream, "ood": ood_stream}, criteria=STAGE2_SELECTION,
        key=key or runs.resume_key(config, ("stage2",)), curriculum=make_curriculum(cfg.sampler, B, device),
    )  # fmt: skip
    if run.resume() and run.finished():
        return run.result()  # the files on disk are the result
    test_xy, eval_every = tuple(t.to(device) for t in test_xy), max(1, cfg.eval_every_images // B)
    run.start("stage 2", progress)
    model.train()
    while run.running(stop_after):  # Algorithm 1
        batch = draw_stage2_batch(cls_stream, gen_stream, ood_stream, device, cfg.channels_last)  # lines 2-3
        T = run.curriculum.T
        loss, stats = stage2_step(model, run.optimizer, cfg, batch, T, net)  # lines 4-13
        stats = distributed.all_mean_stats(stats)  # the same AUC and L_BCE, hence T, on every rank
        run.curriculum.update(stats["auc"], stats["bce"])
        run.advance(loss)
        run.accumulate(stats)  # batch statistics since the last record, kept in last.pt
        if run.step % eval_every == 0 or run.step == total:
            log = {"step": run.step, "images": run.step * B, "T": T} | run.means()  # means over those steps
            run.evaluate(log, test_xy, cfg.attack, fid_fn, cfg.eval_fid_samples)
        elif run.step % checkpoint_every == 0:
            run.checkpoint()
    return run.finish()
