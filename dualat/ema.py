"""Exponential moving average of weights and BN buffers (REFERENCE.md: decay 0.999 with warm-up
min(decay, (1 + n) / (10 + n)))."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds `self.module`, an averaged copy of a model (parameters and floating buffers)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.n = decay, warmup, 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.n) / (10 + self.n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_state, state = self.module.state_dict(), model.state_dict()
        for key, value in ema_state.items():
            if value.dtype.is_floating_point:
                value.lerp_(state[key].detach(), 1 - d)
            else:  # num_batches_tracked
                value.copy_(state[key])
        self.n += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.n = state["n"]
