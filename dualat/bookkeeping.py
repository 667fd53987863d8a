"""What every training loop does besides stepping: the resumable state of a run, the shared
evaluate-select-save, checkpoints and the NaN/inf stop (`Run`). `dualat.train` holds the steps
and the loops of stage 1, RATIO and stage 2; this module holds no training math.

A loop reads:

    run = Run(...)                     # model, optimizer, schedule, EMA, streams, key, criteria
    if run.resume() and run.finished(): return run.result()
    run.start(desc, progress)
    while run.running(stop_after):
        loss, stats = <one step>
        run.advance(loss)              # LR schedule, EMA, step count, progress
        if <evaluation due>: run.evaluate(log, test_xy, attack)   # evaluate, select, save
        elif <checkpoint due>: run.checkpoint()
    return run.finish()                # last.pt and final.pt

Under torchrun every rank keeps the same state and only rank 0 writes files.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualat import checkpoint as ckpt
from dualat import distributed, runs
from dualat.attacks import pgd_ce
from dualat.config import AttackConfig
from dualat.curriculum import Curriculum
from dualat.ema import EMA
from dualat.metrics.accuracy import clean_accuracy, pgd_accuracy
from dualat.progress import bar
from dualat.records import atomic_open, dumps_strict

CURVES = "curves.json"  # the history's curves, flat (dvc.yaml `plots:`)
NONFINITE = "nonfinite.json"  # written by a NaN/inf stop; removed by the run that recovers


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""


def robust_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, batch_size: int = 250
) -> dict:
    """Clean and PGD accuracy of `model` on x (N, C, H, W) in [0, 1], y (N,)."""
    device = next(model.parameters()).device
    return {
        "clean_acc": clean_accuracy(model, x, y, batch_size, device),
        "robust_acc": pgd_accuracy(model, x, y, partial(pgd_ce, cfg=attack), batch_size, device),
    }


@dataclass(frozen=True)
class Criterion:
    """A selected checkpoint: `file` holds the weights of the evaluation with the best `metric`
    (the lowest with `lower`), `start` is Run.best[metric] before any evaluation. With `step_key`
    Run.best keeps the metric and its step under that name; without, Run.best becomes the whole
    record of the selected evaluation."""

    metric: str
    file: str
    start: float | None = None
    lower: bool = False
    step_key: str | None = None

    def improves(self, best: dict, metrics: dict) -> bool:
        value, old = metrics.get(self.metric), best.get(self.metric)
        if value is None:
            return False
        return old is None or (value < old if self.lower else value > old)

    def record(self, best: dict, metrics: dict) -> dict:
        if self.step_key is None:
            return metrics
        return best | {self.metric: metrics[self.metric], self.step_key: metrics["step"]}


_INTERRUPTED = False  # set by a Ctrl-C during training (watch_interrupts)


def watch_interrupts() -> None:
    """Note a Ctrl-C as well as raising KeyboardInterrupt (Python's handler). A KeyboardInterrupt
    that lands in code that cannot raise it (a __del__, such as a data loader's, only prints
    "Exception ignored") is lost; the note makes `Run.advance` stop the run at the next step.
    Only where SIGINT has Python's own handler (main thread; not an ignored or custom handler)."""
    global _INTERRUPTED
    _INTERRUPTED = False
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) in (
        signal.default_int_handler,
        _note_interrupt,
    ):
        signal.signal(signal.SIGINT, _note_interrupt)


def _note_interrupt(signum, frame) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True
    signal.default_int_handler(signum, frame)


@dataclass
class Run:
    """Everything a loop needs to save and restore, and the bookkeeping it shares.

    `key` identifies the run (`dualat.runs`: trajectory keys, data, code): `resume` continues a
    last.pt of the same key and sets any other run aside whole. `config` is the full config,
    stored for the record. `lr` is the configured learning rate (applied on a NaN recovery).
    `total` is the number of steps; `criteria` pick the selected checkpoints.
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
    total: int
    criteria: tuple[Criterion, ...] = ()
    curriculum: Curriculum | None = None
    step: int = 0
    seconds: float = 0.0  # training time over every process that worked on this run
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # batch statistics since the last record
    count: int = 0  # steps in `sums`
    _t0: float | None = field(default_factory=time.time)  # None once finished: `seconds` is final
    _loss_sum: torch.Tensor | None = None  # this process's losses, for the NaN/inf check
    _bar: Any = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.best = self.best or {c.metric: c.start for c in self.criteria}

    # --- the loop ---------------------------------------------------------------------------------

    def start(self, desc: str, progress: bool) -> None:
        """Before the first step of this process: a progress bar (rank 0's), a zero loss sum, and
        Ctrl-C noted (`watch_interrupts`)."""
        watch_interrupts()
        self._loss_sum = torch.zeros((), device=next(self.model.parameters()).device)
        enabled = progress and distributed.is_main()
        self._bar = bar(total=self.total, initial=self.step, desc=desc, enabled=enabled)

    def running(self, stop_after: int | None = None) -> bool:
        """True while steps are left; `stop_after` ends early (to simulate a kill in tests)."""
        return self.step < self.total and (stop_after is None or self.step < stop_after)

    def advance(self, loss: torch.Tensor) -> None:
        """After an optimizer step: the LR schedule, the EMA, the step count and the progress."""
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        self._loss_sum += loss.detach()
        self._bar.update(1)
        if _INTERRUPTED:  # a Ctrl-C whose KeyboardInterrupt something swallowed stops the run here
            raise KeyboardInterrupt("Ctrl-C: stopped after this step; last.pt holds the last checkpoint")

    def accumulate(self, stats: dict[str, torch.Tensor]) -> None:
        """Add one step's batch statistics to the sums since the last record (saved in last.pt,
        so a resumed run logs the same means as an uninterrupted one)."""
        self.sums = {k: self.sums.get(k, 0) + v.detach() for k, v in stats.items()}
        self.count += 1

    def means(self) -> dict[str, float]:
        """The mean of each accumulated statistic since the last record; the sums start again."""
        out = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out

    def evaluate(
        self,
        log: dict,
        test_xy: tuple[torch.Tensor, torch.Tensor],
        attack: AttackConfig,
        fid_fn: Callable[[nn.Module, int], float] | None = None,
        fid_samples: int = 0,
    ) -> dict:
        """Evaluate, select, save: the selected weights (EMA when on) get clean and PGD accuracy on
        test_xy (and, with `fid_fn`, the FID of `fid_samples` samples); `log` and these join the
        history; each criterion's file keeps its best weights; last.pt and history.json are written."""
        self.check_finite()
        selected = self.ema.module if self.ema else self.model
        metrics = log | robust_accuracy(selected, *test_xy, attack)
        if fid_fn is not None and fid_samples > 0:
            metrics["fid"] = float(fid_fn(selected, fid_samples))
        self.history.append(metrics)
        self._show(metrics)
        for criterion in self.criteria:
            if criterion.improves(self.best, metrics):
                self.best = criterion.record(self.best, metrics)
                self.save_weights(criterion.file, selected, metrics)
        self.save()
        self.write_history()
        return metrics

    def _show(self, metrics: dict) -> None:
        shown = {"T": metrics["T"]} if "T" in metrics else {}
        names = {"robust": "robust_acc", "clean": "clean_acc", "fid": "fid"}
        shown |= {short: f"{metrics[name]:.3f}" for short, name in names.items() if name in metrics}
        self._bar.set_postfix(**shown)

    def checkpoint(self) -> None:
        """last.pt, after the NaN/inf check."""
        self.check_finite()
        self.save()

    def finish(self) -> dict:
        """After the last step of this process: last.pt and final.pt (the selected weights of the
        last step with its last evaluation); returns `result()`."""
        self._bar.close()
        self.check_finite()
        self.seconds, self._t0 = self.elapsed(), None  # the same seconds in last.pt, final.pt and the result
        self.save()
        final = self.ema.module if self.ema else self.model
        record = {"run": self.result(), "curriculum": self.curriculum.state_dict() if self.curriculum else None}
        self.save_weights("final.pt", final, self.history[-1] if self.history else {}, **record)
        distributed.barrier()  # no rank goes on before rank 0 has written
        return self.result()

    def check_finite(self) -> None:
        """Stop on a NaN/inf loss, leaving the last good checkpoint and `nonfinite.json`, which
        lets the next run resume from that checkpoint across a change of `runs.RECOVERY_KEYS`."""
        if torch.isfinite(distributed.all_mean(self._loss_sum)):  # all ranks stop together
            return
        text = (
            f"the loss became NaN/inf before step {self.step}; the last good checkpoint "
            f"({self.out_dir / 'last.pt'}) was kept. Lower the learning rate (optim.lr) or the sampler "
            "step size (stage2.sampler.step_size) in params.yaml and rerun: training resumes from it."
        )
        if distributed.is_main():
            with atomic_open(self.out_dir / NONFINITE, "w") as f:
                json.dump({"step": self.step, "message": text}, f)
        raise NonFiniteLoss(text)

    # --- files ------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Training seconds over every process that worked on this run, up to now (or to its end)."""
        return self.seconds + (time.time() - self._t0 if self._t0 is not None else 0.0)

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
            "sums": self.sums,
            "count": self.count,
            "key": self.key,
            "config": self.config,
            "git_rev": ckpt.git_revision(),
            "versions": ckpt.library_versions(),
            "rng": torch.get_rng_state(),
        }
        return ckpt.save(self.out_dir / name, payload)

    def resume(self, bring_back: bool = True) -> bool:
        """Continue the run recorded in out_dir when its key equals ours: last.pt (also across a
        change of `runs.RECOVERY_KEYS` only, after a NaN/inf stop), or, without a readable last.pt,
        a finished run whose final.pt and selected checkpoints are complete. Any other run in
        out_dir is moved aside whole (`runs.set_aside`), never overwritten; then a run of our key
        set aside earlier is brought back (A -> B -> A) and continued. True when resumed."""
        state, unreadable = _read(self.out_dir / "last.pt")
        distributed.barrier()  # every rank has read last.pt before rank 0 may move it
        if state is not None and self._continues(state):
            self._restore(state)
            return True
        if state is None and self._finished_on_disk(unreadable):
            return True
        if distributed.is_main():
            diff = self._differences(state, unreadable)
            if diff:
                runs.set_aside(self.out_dir, diff)
            if bring_back:
                runs.bring_back(self.out_dir, self._continuable)
        distributed.barrier()
        return bring_back and bool(runs.run_files(self.out_dir)) and self.resume(bring_back=False)

    def _continues(self, state: dict) -> bool:
        """Whether last.pt's `state` is ours to continue (the same key, or a NaN/inf recovery)."""
        old_key = state.get("key", {})
        recovering = (self.out_dir / NONFINITE).is_file() and runs.recoverable(old_key, self.key)
        return old_key == self.key or recovering

    def _restore(self, state: dict) -> None:
        """Take every piece of the run from last.pt's `state` (after a NaN/inf stop, the new lr)."""
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
        device = next(self.model.parameters()).device
        self.sums = {k: v.to(device) for k, v in state.get("sums", {}).items()}
        self.count = state.get("count", 0)
        self.seconds, self._t0 = state["seconds"], time.time()
        torch.set_rng_state(state["rng"])
        if self.finished():
            self._t0 = None  # nothing to train: the seconds stay those stored (see `result`)
        if state.get("key", {}) != self.key:
            self._recover(runs.differences(state.get("key", {}), self.key))

    def _finished_on_disk(self, unreadable: str | None) -> bool:
        """Without a readable last.pt: take the finished run of our key that final.pt records,
        when final.pt and every selected checkpoint it names are complete (warning when last.pt
        is there but unreadable). True when taken."""
        final = self._finished_record(self.out_dir)
        if final is None:
            return False
        record = final["run"]
        self.step, self.history, self.best, self.seconds = (
            record["steps"],
            record["history"],
            record["best"],
            record["seconds"],
        )
        self._t0 = None
        if self.curriculum:
            self.curriculum.load_state_dict(final["curriculum"])
        if unreadable is not None:
            warnings.warn(
                f"{self.out_dir / 'last.pt'} cannot be read ({unreadable}); the run is finished and its final.pt "
                "and selected checkpoints are complete, so they are used as they are. last.pt serves only to "
                "continue training: delete it or leave it.",
                stacklevel=3,
            )
        return True

    def _finished_record(self, folder: Path) -> dict | None:
        """final.pt of `folder` when it records a finished run of our key whose selected
        checkpoints are readable and of our key too; None otherwise."""
        final, _ = _read(folder / "final.pt")
        if final is None or final.get("key") != self.key or "run" not in final:
            return None
        if final["run"]["steps"] < self.total:  # written by a run stopped early (stop_after)
            return None
        for c in self.criteria:
            if final["run"]["best"].get(c.metric) == c.start:  # never selected: no file to check
                continue
            state, _ = _read(folder / c.file, mmap=True)
            if state is None or state.get("key") != self.key:
                return None
        return final

    def _continuable(self, folder: Path) -> bool:
        """Whether the run in `folder` (set aside earlier) is ours: a last.pt of our key, or a
        finished run of our key (`_finished_record`)."""
        state, _ = _read(folder / "last.pt", mmap=True)
        if state is not None:
            return state.get("key") == self.key
        return self._finished_record(folder) is not None

    def _differences(self, state: dict | None, unreadable: str | None) -> list[str]:
        """Why the run files in out_dir are not continued, one line each (see `runs.set_aside`);
        empty when out_dir holds no run."""
        if not runs.run_files(self.out_dir):
            return []
        old_key = state.get("key", {}) if state is not None else self._recorded_key()
        lines = runs.differences(old_key or {}, self.key) if old_key is not None else []
        if unreadable is not None:
            lines.append(f"last.pt: cannot be read ({unreadable})")
        if not lines:
            lines.append("last.pt: <absent>, and final.pt records no finished run: the run cannot be continued")
        return lines

    def _recorded_key(self) -> dict | None:
        """The key out_dir's run records without last.pt: that of final.pt, else of a selected
        checkpoint; None when no file records one."""
        for path in [self.out_dir / "final.pt", *sorted(self.out_dir.glob("best*.pt"))]:
            state, _ = _read(path, mmap=True)
            if state is not None and "key" in state:
                return state["key"]
        return None

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

    def finished(self) -> bool:
        """True when the run is complete on disk (resumed at its last step with final.pt written)."""
        return self.step >= self.total and (self.out_dir / "final.pt").is_file()

    def result(self) -> dict:
        """What the loop returns: the history, the selected records, the steps, the seconds and
        (stage 2) T. A finished run reports the seconds stored with it (`finish` fixes them), so the
        status.json written from it is byte-identical on every rerun and DVC skips the stages after it."""
        out = {"history": self.history, "best": self.best, "steps": self.step, "seconds": self.elapsed()}
        return out | ({"T": self.curriculum.T} if self.curriculum else {})

    def save_weights(self, name: str, model: nn.Module, metrics: dict, **extra: Any) -> Path:
        """A selected model (best accuracy / best FID) as its own small checkpoint; "plain"
        holds the trained (non-EMA) weights of the same step. Both keys hold EMA-free weights
        when EMA is off. `extra` joins the payload (final.pt: the run's result and curriculum,
        which let a finished run be used without last.pt)."""
        if not distributed.is_main():
            return self.out_dir / name
        payload = {"model": model.state_dict(), "plain": self.model.state_dict(), "step": self.step, "metrics": metrics}
        payload |= extra
        payload |= {"ema": self.ema is not None, "key": self.key, "config": self.config}
        payload.update(git_rev=ckpt.git_revision(), versions=ckpt.library_versions())
        return ckpt.save(self.out_dir / name, payload)

    def write_history(self) -> None:
        """history.json, and curves.json: its evaluations as flat rows of numbers (step, clean and
        robust accuracy, FID, T, AUC, ...), the data of dvc.yaml's `plots:` (Figures 2 and 4)."""
        if not distributed.is_main():
            return
        with atomic_open(self.out_dir / "history.json", "w") as f:
            f.write(dumps_strict(self.history))
        with atomic_open(self.out_dir / CURVES, "w") as f:
            f.write(dumps_strict(curves(self.history)))


def curves(history: list[dict]) -> list[dict]:
    """The evaluation rows of `history` (those with a robust accuracy), numbers only (a note
    such as a NaN/inf recovery is left out); NaN/inf values read null."""
    rows = [r for r in history if "robust_acc" in r]
    return [{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} for r in rows]


def _read(path: Path, mmap: bool = False) -> tuple[dict | None, str | None]:
    """(checkpoint, None) when `path` reads, (None, why) when it exists but does not, (None, None)
    when it does not exist. `mmap` maps the tensors instead of reading them, for a look at the key."""
    if not path.is_file():
        return None, None
    try:
        return ckpt.load(path, mmap=mmap), None
    except (RuntimeError, ValueError, OSError) as err:  # truncated or foreign: checkpoint.load names the file
        return None, str(err.__cause__ or err)
