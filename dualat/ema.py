"""Exponential moving average of weights and BN buffers.

Released code (REFERENCE.md, 'Measured against the released code'): the first update copies the
model (n = 0); update n >= 1 averages with decay min(decay, (1 + n) / (10 + n)), n = the number
of earlier updates. Without `warmup` every update uses the fixed decay, the first one included.
Floating parameters and buffers (BN running statistics) are averaged; integer buffers
(`num_batches_tracked`) are copied.

One update is a handful of multi-tensor (foreach) kernels over all tensors of a dtype and device,
not a Python loop with one kernel per tensor (`scripts/bench_ema.py` times both).
"""

from __future__ import annotations

import copy
from collections import defaultdict

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
        """The decay of the next update; 0.0 (a copy) for the first update under warm-up."""
        if not self.warmup:
            return self.decay
        return 0.0 if self.n == 0 else min(self.decay, (1 + self.n) / (10 + self.n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- d * ema + (1 - d) * model for floating tensors, copy for integer ones."""
        d = self.current_decay()
        ema_state, state = self.module.state_dict(), model.state_dict()
        # foreach kernels need one dtype and device per list: group the (ema, model) pairs
        groups: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
        copies: tuple[list, list] = ([], [])
        for key, value in ema_state.items():
            src = state[key].detach().to(value.device, value.dtype)  # no-op when they agree
            if value.dtype.is_floating_point and d > 0.0:
                pair = groups[(value.device, value.dtype)]
            else:  # integer buffers (num_batches_tracked), or the first update's copy
                pair = copies
            pair[0].append(value)
            pair[1].append(src)
        for ema_t, model_t in groups.values():
            torch._foreach_lerp_(ema_t, model_t, 1.0 - d)
        if copies[0]:
            torch._foreach_copy_(copies[0], copies[1])
        self.n += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.n = state["n"]
