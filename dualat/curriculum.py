"""Curriculum on T, the number of contrastive sampling steps of stage 2.

Rule "auc" (released code, REFERENCE.md): keep the AUC between f(x_hat)[y] (positives) and
f(x_T)[y'] (negatives) of the last W = ceil(window_images / B) batches; when the window is full
and its mean >= threshold, raise T by one (up to T_max) and clear the history.
Rule "loss" (the paper's wording): the same with the mean L_BCE < threshold.

All bookkeeping lives on the device. `lag` says when the host learns the new T:
- lag 0 (released code, REFERENCE.md 'Measured against the released code'): a raise decided
  after batch k applies to batch k + 1. The host reads T with a blocking copy after every batch:
  the one host sync per step that stage 2 allows (it waits for the step's kernels to finish).
- lag 1 (overlap-friendly): the host reads T through a non-blocking copy one step later, so the
  training loop never waits for the device; a raise decided after batch k applies from batch
  k + 2. The T trajectory is lag 0's delayed by one batch.
"""

from __future__ import annotations

import math

import torch


class Curriculum:
    def __init__(
        self, T_max: int, rule: str, threshold: float, window_images: int, batch_size: int, device="cpu", lag: int = 1
    ):
        if rule not in ("auc", "loss"):
            raise ValueError(f"stage2.sampler.curriculum must be 'auc' or 'loss', got {rule!r}")
        if lag not in (0, 1):
            raise ValueError(f"stage2.sampler.curriculum_lag must be 0 or 1, got {lag!r}")
        self.T_max, self.rule, self.threshold, self.lag = T_max, rule, threshold, lag
        self.window = math.ceil(window_images / batch_size)
        device = torch.device(device)
        self.T_dev = torch.zeros((), dtype=torch.long, device=device)
        self.hist = torch.zeros(self.window, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        pin = device.type == "cuda"
        self._host = torch.zeros((), dtype=torch.long, pin_memory=pin)
        self._event = torch.cuda.Event() if pin else None
        self.T = 0  # the value the host uses for the next batch

    def update(self, auc: torch.Tensor, bce: torch.Tensor) -> int:
        """Record one batch's AUC and L_BCE (0-d device tensors); return T for the next batch."""
        if self.lag:
            if self._event is not None:
                self._event.synchronize()  # the copy of the previous step, long finished
            self.T = int(self._host)
        value = auc if self.rule == "auc" else bce
        self.hist = torch.cat([self.hist[1:], value.detach().float().reshape(1)])
        self.count = torch.clamp(self.count + 1, max=self.window)
        mean = self.hist.mean()
        good = mean >= self.threshold if self.rule == "auc" else mean < self.threshold
        raise_t = (self.count >= self.window) & good & (self.T_dev < self.T_max)
        self.T_dev = self.T_dev + raise_t.long()
        self.count = torch.where(raise_t, torch.zeros_like(self.count), self.count)
        if not self.lag:  # the one allowed host sync per step: T for the very next batch
            self.T = int(self.T_dev)
            self._host.fill_(self.T)
            return self.T
        self._host.copy_(self.T_dev, non_blocking=self._event is not None)
        if self._event is not None:
            self._event.record()
        return self.T

    def state_dict(self) -> dict:
        return {
            "T": self.T,
            "T_dev": self.T_dev.cpu(),
            "hist": self.hist.cpu(),
            "count": self.count.cpu(),
            "host": int(self._host),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.hist.device
        self.T = state["T"]
        self.T_dev, self.hist, self.count = (state[k].to(device) for k in ("T_dev", "hist", "count"))
        self._host.fill_(state["host"])
