"""Training: stage 1 (standard AT, BN in train mode), the RATIO baseline, and stage 2 (Dual-AT,
BN frozen). Loops return their history; checkpoints are atomic and resumable.

A loop takes infinite batch streams (objects with `__next__`, `state_dict`, `load_state_dict`,
see `dualat.data`), so resuming restores the exact batches an uninterrupted run would see.

Under torchrun (`dualat.distributed`) the loss pass runs through DDP, every rank keeps identical
weights, EMA, curriculum and history, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualat import checkpoint as ckpt
from dualat import distributed, runs
from dualat.attacks import pgd_ce, pgd_uniform_ce
from dualat.config import AttackConfig, OptimConfig, RatioConfig, Stage1Config, Stage2Config, to_dict
from dualat.curriculum import Curriculum
from dualat.ema import EMA
from dualat.energy import joint_energy
from dualat.losses import at_ce, bce_energy, pairwise_auc, ratio_ood
from dualat.records import atomic_open, dumps_strict
from dualat.sampling import attack_and_sample


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""


# --- pieces ---------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def make_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int):
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


def robust_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, batch_size: int = 250
) -> dict:
    """Clean and PGD accuracy of `model` on x (N, C, H, W) in [0, 1], y (N,)."""
    from functools import partial

    from dualat.metrics import clean_accuracy, pgd_accuracy

    device = next(model.parameters()).device
    return {
        "clean_acc": clean_accuracy(model, x, y, batch_size, device),
        "robust_acc": pgd_accuracy(model, x, y, partial(pgd_ce, cfg=attack), batch_size, device),
    }


def _check_finite(loss_sum: torch.Tensor, run: Run) -> None:
    """Stop on a NaN/inf loss, leaving the last good checkpoint and `nonfinite.json`, which lets
    the next run resume from that checkpoint across a change of `runs.RECOVERY_KEYS`."""
    if torch.isfinite(distributed.all_mean(loss_sum)):  # all ranks stop together
        return
    text = (
        f"the loss became NaN/inf before step {run.step}; the last good checkpoint "
        f"({run.out_dir / 'last.pt'}) was kept. Lower the learning rate (optim.lr) or the sampler "
        "step size (stage2.sampler.step_size) in params.yaml and rerun: training resumes from it."
    )
    if distributed.is_main():
        with atomic_open(run.out_dir / NONFINITE, "w") as f:
            json.dump({"step": run.step, "message": text}, f)
    raise NonFiniteLoss(text)


NONFINITE = "nonfinite.json"  # written by a NaN/inf stop; removed by the run that recovers


@dataclass
class Run:
    """Everything a loop needs to save and restore.

    `key` identifies the run (`dualat.runs`: trajectory keys, data, code): `resume` continues a
    last.pt of the same key and sets any other run aside whole. `config` is the full config,
    stored for the record. `lr` is the configured learning rate (applied on a NaN recovery).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA | None
    streams: dict[str, Any]
    out_dir: Path
    config: dict
    key: dict
    lr: float
    curriculum: Curriculum | None = None
    step: int = 0
    seconds: float = 0.0  # training time over every process that worked on this run
    history: list[dict] | None = None
    best: dict | None = None
    _t0: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        return self.seconds + time.time() - self._t0

    def save(self, name: str = "last.pt") -> Path:
        if not distributed.is_main():  # the ranks hold the same state; rank 0 writes it
            return self.out_dir / name
        payload = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "curriculum": self.curriculum.state_dict() if self.curriculum else None,
            "step": self.step,
            "seconds": self.elapsed(),
            "history": self.history,
            "best": self.best,
            "key": self.key,
            "config": self.config,
            "git_rev": ckpt.git_revision(),
            "versions": ckpt.library_versions(),
            "rng": torch.get_rng_state(),
        }
        return ckpt.save(self.out_dir / name, payload)

    def resume(self) -> bool:
        """Continue out_dir/last.pt when its key equals ours (or differs in `runs.RECOVERY_KEYS`
        only after a NaN/inf stop); otherwise move the earlier run aside whole (`runs.set_aside`).
        True when resumed."""
        path = self.out_dir / "last.pt"
        state = ckpt.load(path) if path.exists() else None
        distributed.barrier()  # every rank has read last.pt before rank 0 may move it
        if state is None:
            return False
        old_key = state.get("key", {})
        recovering = (
            old_key != self.key and (self.out_dir / NONFINITE).is_file() and runs.recoverable(old_key, self.key)
        )
        if old_key != self.key and not recovering:
            if distributed.is_main():
                runs.set_aside(self.out_dir, runs.differences(old_key, self.key))
            distributed.barrier()
            return False
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for k, s in self.streams.items():
            s.load_state_dict(state["streams"][k])
        if self.curriculum:
            self.curriculum.load_state_dict(state["curriculum"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        self.seconds, self._t0 = state["seconds"], time.time()
        torch.set_rng_state(state["rng"])
        if recovering:
            self._recover(runs.differences(old_key, self.key))
        return True

    def _recover(self, diff: list[str]) -> None:
        """After a NaN/inf stop: take the new learning rate (the schedule keeps its shape) and
        note the change in the history."""
        self.scheduler.base_lrs = [self.lr for _ in self.optimizer.param_groups]
        for group, factor in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas):
            group["initial_lr"] = self.lr
            group["lr"] = self.lr * factor(self.scheduler.last_epoch)
        self.history.append({"step": self.step, "resumed_after_nonfinite": diff})
        warnings.warn(
            f"resuming {self.out_dir} at step {self.step} after a NaN/inf stop with: {'; '.join(diff)}", stacklevel=3
        )
        if distributed.is_main():
            (self.out_dir / NONFINITE).unlink()

    def finished(self, total: int) -> bool:
        """True when the run is complete on disk (resumed at its last step with final.pt written)."""
        return self.step >= total and (self.out_dir / "final.pt").is_file()

    def result(self, finished: bool = False) -> dict:
        """What the loop returns; a finished run reports the seconds stored with it, so the
        status.json written from it is byte-identical on every rerun (DVC then skips what follows)."""
        seconds = self.seconds if finished else self.elapsed()
        return {"history": self.history, "best": self.best, "steps": self.step, "seconds": seconds}

    def save_weights(self, name: str, model: nn.Module, metrics: dict) -> Path:
        """A selected model (best accuracy / best FID) as its own small checkpoint; "plain"
        holds the trained (non-EMA) weights of the same step. Both keys hold EMA-free weights
        when EMA is off."""
        if not distributed.is_main():
            return self.out_dir / name
        payload = {"model": model.state_dict(), "plain": self.model.state_dict(), "step": self.step, "metrics": metrics}
        payload |= {"ema": self.ema is not None, "key": self.key, "config": self.config}
        payload.update(git_rev=ckpt.git_revision(), versions=ckpt.library_versions())
        return ckpt.save(self.out_dir / name, payload)

    def write_history(self) -> None:
        if not distributed.is_main():
            return
        with atomic_open(self.out_dir / "history.json", "w") as f:
            f.write(dumps_strict(self.history))


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    enabled = enabled and distributed.is_main()  # one bar, rank 0's
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


# --- stage 1 and RATIO ----------------------------------------------------------------------------


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

    Saves out_dir/last.pt (resume) every `checkpoint_every` steps and at every evaluation, and
    out_dir/best.pt: the weights with the best PGD robust test accuracy (EMA weights when EMA is
    on, as stage 2 starts from them). `stop_after` ends the loop early after that many steps
    (to simulate a kill in tests). Returns {"history", "best", "steps"}.

    Distributed: gradients are averaged by DDP; BN normalises with each rank's own batch and
    the running statistics are averaged over ranks after every step.
    """
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    total = cfg.epochs * steps_per_epoch
    net = distributed.wrap(model)  # for the loss pass (attacks use the bare model); rank 0's weights
    opt = make_optimizer(model, cfg.optim)
    streams = {"train": train_stream} | ({"ood": ood_stream} if ratio else {})
    config = config or {"stage1": to_dict(cfg)} | ({"ratio": to_dict(ratio)} if ratio else {})
    run = Run(
        model, opt, make_schedule(opt, cfg.optim, steps_per_epoch, total), EMA(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None,
        streams, out_dir, config, key or runs.resume_key(config, ("stage1", "ratio")), cfg.optim.lr,
        history=[], best={"robust_acc": -1.0},
    )  # fmt: skip
    if run.resume() and run.finished(total):
        return run.result(finished=True)  # nothing to do: the files on disk are the result
    x_test, y_test = (t.to(device) for t in test_xy)
    loss_sum = torch.zeros((), device=device)
    bar = _progress(total, run.step, "stage 1" if ratio is None else "RATIO", progress)
    model.train()
    while run.step < total and (stop_after is None or run.step < stop_after):
        x, y = (t.to(device, non_blocking=True) for t in next(train_stream))
        x_adv = pgd_ce(model, x, y, cfg.attack)  # eval mode inside, train mode restored
        inputs = [x_adv]
        if ratio is not None:
            x_ood = next(ood_stream)[0].to(device, non_blocking=True)
            inputs.append(pgd_uniform_ce(model, x_ood, ratio.ood_attack))
        logits = net(torch.cat(inputs))  # one BN-train-mode pass over in- and out-distribution
        loss, stats = at_ce(logits[: len(x)], y)
        if ratio is not None:
            l_ood, ood_stats = ratio_ood(logits[len(x) :])
            loss = loss + ratio.lam * l_ood
            stats |= ood_stats
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        distributed.sync_buffers(model)  # the same BN statistics on every rank
        run.scheduler.step()
        if run.ema:
            run.ema.update(model)
        run.step += 1
        loss_sum += loss.detach()
        bar.update(1)
        epoch_end = run.step % steps_per_epoch == 0
        if epoch_end and (run.step // steps_per_epoch) % cfg.eval_every_epochs == 0 or run.step == total:
            _check_finite(loss_sum, run)
            selected = run.ema.module if run.ema else model
            metrics = robust_accuracy(selected, x_test, y_test, cfg.attack)
            metrics |= {"step": run.step, "epoch": run.step / steps_per_epoch, "lr": opt.param_groups[0]["lr"]}
            metrics |= {k: float(v) for k, v in distributed.all_mean_stats(stats).items()}
            run.history.append(metrics)
            bar.set_postfix(robust=f"{metrics['robust_acc']:.3f}", clean=f"{metrics['clean_acc']:.3f}")
            if metrics["robust_acc"] > run.best["robust_acc"]:
                run.best = metrics
                run.save_weights("best.pt", selected, metrics)
            run.save()
            run.write_history()
        elif run.step % checkpoint_every == 0:
            _check_finite(loss_sum, run)
            run.save()
    bar.close()
    _check_finite(loss_sum, run)
    run.save()
    final = run.ema.module if run.ema else model
    run.save_weights("final.pt", final, run.history[-1] if run.history else {})
    distributed.barrier()  # no rank goes on before rank 0 has written
    return run.result()


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
    pos = -joint_energy(logits_hat.detach(), y_hat)  # f(x_hat)[y_hat]
    neg = -joint_energy(logits_T.detach(), y_hat)  # f(x_T)[y']
    stats |= bce_stats | {"auc": pairwise_auc(pos, neg), "loss": loss.detach()}
    return loss, stats


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
    """Stage 2 (Dual-AT, Eq. 12) from stage-1 weights already in `model`.

    Every `cfg.eval_every_images` images the EMA model (or the model without EMA) is evaluated:
    PGD robust accuracy on the test tensors and, with `fid_fn(model, n)`, FID of n samples. The
    log (for Figures 2 and 4) is out_dir/history.json; best_fid.pt and best_acc.pt hold the
    selected weights, last.pt the resumable state. Stops after `cfg.images` images.

    Distributed: `cfg.images` and `cfg.batch_size` count per rank (N ranks see N x images in all);
    gradients are averaged by DDP; the curriculum and the history get batch statistics averaged
    over ranks, so T is the same on every rank.
    """
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    freeze_bn(model)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model)  # for the loss pass, after freeze_bn: BN buffers never change
    B = cfg.batch_size
    total = math.ceil(cfg.images / B)
    opt = make_optimizer(model, cfg.optim)
    curriculum = Curriculum(
        cfg.sampler.T_max,
        cfg.sampler.curriculum,
        cfg.sampler.auc_threshold if cfg.sampler.curriculum == "auc" else cfg.sampler.loss_threshold,
        cfg.sampler.auc_window_images,
        B,
        device,
        cfg.sampler.curriculum_lag,
    )
    config = config or {"stage2": to_dict(cfg)}
    run = Run(
        model, opt, make_schedule(opt, cfg.optim, 1, total), EMA(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None,
        {"cls": cls_stream, "gen": gen_stream, "ood": ood_stream}, out_dir, config,
        key or runs.resume_key(config, ("stage2",)), cfg.optim.lr, curriculum=curriculum,
        history=[], best={"fid": None, "robust_acc": -1.0},
    )  # fmt: skip
    if run.resume() and run.finished(total):
        return run.result(finished=True) | {"T": curriculum.T}  # nothing to do: the files on disk are the result
    x_test, y_test = (t.to(device) for t in test_xy)
    eval_every = max(1, cfg.eval_every_images // B)
    loss_sum = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}
    bar = _progress(total, run.step, "stage 2", progress)
    model.train()
    while run.step < total and (stop_after is None or run.step < stop_after):
        x, y = next(cls_stream)
        x_hat, y_hat = next(gen_stream)
        x0 = next(ood_stream)[0]
        batch = tuple(t.to(device, non_blocking=True) for t in (x, y, x_hat, y_hat, x0))
        if cfg.channels_last:
            batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in batch)
        T = curriculum.T
        loss, stats = stage2_step(model, opt, cfg, batch, T, net)
        run.scheduler.step()
        if run.ema:
            run.ema.update(model)
        stats = distributed.all_mean_stats(stats)  # the same AUC and L_BCE, hence T, on every rank
        curriculum.update(stats["auc"], stats["bce"])
        run.step += 1
        loss_sum += loss.detach()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v
        bar.update(1)
        if run.step % eval_every == 0 or run.step == total:
            _check_finite(loss_sum, run)
            n = run.step - (run.history[-1]["step"] if run.history else 0)
            selected = run.ema.module if run.ema else model
            metrics = {"step": run.step, "images": run.step * B, "T": T}
            metrics |= {k: float(v) / max(n, 1) for k, v in sums.items()}
            sums = {}
            metrics |= robust_accuracy(selected, x_test, y_test, cfg.attack)
            if fid_fn is not None and cfg.eval_fid_samples > 0:
                metrics["fid"] = float(fid_fn(selected, cfg.eval_fid_samples))
            run.history.append(metrics)
            bar.set_postfix(T=T, robust=f"{metrics['robust_acc']:.3f}", fid=f"{metrics.get('fid', float('nan')):.1f}")
            if "fid" in metrics and (run.best["fid"] is None or metrics["fid"] < run.best["fid"]):
                run.best = run.best | {"fid": metrics["fid"], "fid_step": run.step}
                run.save_weights("best_fid.pt", selected, metrics)
            if metrics["robust_acc"] > run.best["robust_acc"]:
                run.best = run.best | {"robust_acc": metrics["robust_acc"], "acc_step": run.step}
                run.save_weights("best_acc.pt", selected, metrics)
            run.save()
            run.write_history()
        elif run.step % checkpoint_every == 0:
            _check_finite(loss_sum, run)
            run.save()
    bar.close()
    _check_finite(loss_sum, run)
    run.save()
    final = run.ema.module if run.ema else model
    run.save_weights("final.pt", final, run.history[-1] if run.history else {})
    distributed.barrier()  # no rank goes on before rank 0 has written
    return run.result() | {"T": curriculum.T}
