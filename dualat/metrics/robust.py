"""AutoAttack robust accuracy (L2) through `pyautoattack`, resumable and with per-attack accuracies.

pyautoattack reports the accuracy after each attack only in its log. Instead of parsing log
lines, we run its attacks one at a time: each call of `run_standard_evaluation` gets only the
points that are still robust and a single attack. This gives the same adversarial examples as
one call with the whole sequence, because AutoAttack (a) attacks only robust points, batched in
index order, and (b) reseeds every attack with `seed` at each `perturb` call.

The data is evaluated in chunks of `chunk_size` points; with `state_path`, per-sample flags of
every finished chunk are saved (atomically) so a killed evaluation resumes after the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from dualat.attacks import eval_mode
from dualat.metrics.accuracy import predict_logits
from dualat.progress import bar
from dualat.records import atomic_open

_STATE_VERSION = 1
AUTOATTACK_LOGGER = "auto-attack"  # the logger pyautoattack's sanity checks (checks.py) warn through


class _Collect(logging.Handler):
    """Keeps the messages of WARNING level and above that reach it."""

    def __init__(self, out: list[str]):
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


@contextmanager
def autoattack_warnings():
    """Collects AutoAttack's own warnings (its sanity checks: randomised or non-logit outputs,
    zero gradients, a too-successful Square attack, too few classes), whether they go through its
    logger or through `warnings.warn`. Yields the list of messages, filled while the block runs."""
    out: list[str] = []
    handler = _Collect(out)
    log = logging.getLogger(AUTOATTACK_LOGGER)
    log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
        out.extend(str(w.message) for w in caught if "pyautoattack" in w.filename or "autoattack" in w.filename)
    finally:
        log.removeHandler(handler)


def _fingerprint(x: torch.Tensor, y: torch.Tensor, **settings) -> dict:
    """What a saved state must match to be resumed: the data and the attack settings."""
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return {"state_version": _STATE_VERSION, "n": len(x), "data_sha256": h.hexdigest(), **settings}


def _load_state(path: Path, fingerprint: dict) -> list[dict]:
    """Finished chunks from `path` ([] if absent); refuses a state made for other data or settings."""
    if not path.exists():
        return []
    with open(path) as f:
        state = json.load(f)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"AutoAttack state {path} was made for other data or settings:\n"
            f"  saved   {state['fingerprint']}\n  current {fingerprint}\nDelete it to start afresh."
        )
    return state["chunks"]


def _save_state(path: Path, fingerprint: dict, chunks: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        json.dump({"fingerprint": fingerprint, "chunks": chunks}, f)


def _attack_chunk(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    version: str,
    attacks: list[str] | None,
    seed: int,
    batch_size: int,
    device: str | torch.device,
) -> dict:
    """Per-sample flags for one chunk: {"clean": [0/1]*n, "after": {attack: [0/1]*n}, "warnings":
    [AutoAttack's own warnings]}."""
    from pyautoattack import AutoAttack  # lazy: absent on the bare GPU machine

    aa = AutoAttack(model, attacks=attacks, norm="L2", eps=eps, version=version, device=device, seed=seed)
    logits = predict_logits(model, x, batch_size, device)  # (n, K)
    # "standard" targets the 9 runner-up classes, which needs K >= 10; with fewer classes (e.g.
    # RestrictedImageNet's 9) target every other class, as AutoAttack's own check advises.
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, logits.shape[1] - 1)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, logits.shape[1] - 1)
    robust = logits.argmax(1) == y  # (n,) bool
    clean = robust.clone()
    after = {}
    with autoattack_warnings() as messages:
        for name in list(aa.attacks_to_run):
            idx = robust.nonzero().squeeze(1)
            if len(idx) > 0:
                aa.attacks_to_run = [name]
                x_adv, _ = aa.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
                # Judge the returned points ourselves rather than trusting the library's bookkeeping.
                robust[idx] = predict_logits(model, x_adv.cpu(), batch_size, device).argmax(1) == y[idx]
            after[name] = robust.int().tolist()
    return {"clean": clean.int().tolist(), "after": after, "warnings": list(dict.fromkeys(messages))}


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    version: str = "standard",
    attacks: Sequence[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    state_path: str | os.PathLike | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
) -> dict:
    """L2 AutoAttack accuracy of `model` on x (N, C, H, W) in [0, 1] with labels y (N,).

    Returns {"clean": acc, "robust": acc, "per_attack": {attack: robust acc after it}, "n": N,
    "warnings": [AutoAttack's own sanity-check warnings, each once]};
    for version="standard" the attacks are apgd-ce, apgd-t, fab-t, square, in that order;
    `attacks` picks them for version="custom" (pyautoattack's default settings). The model must
    live on `device`; it runs in eval mode. The global RNG state is left untouched.
    With `state_path`, finished chunks are saved there and skipped on the next call.
    """
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need N > 0 images and as many labels, got {len(x)} and {len(y)}")
    x, y = x.detach().cpu(), y.detach().cpu().long()
    attacks = list(attacks) if attacks is not None else None
    state_path = Path(state_path) if state_path is not None else None
    settings = dict(eps=eps, norm="L2", version=version, attacks=attacks, seed=seed, chunk_size=chunk_size)
    fingerprint = _fingerprint(x, y, **settings)
    chunks = _load_state(state_path, fingerprint) if state_path is not None else []
    starts = range(0, len(x), chunk_size)
    with eval_mode(model), torch.random.fork_rng():  # pyautoattack reseeds the global RNG
        for start in bar(starts[len(chunks) :], desc="AutoAttack chunks", enabled=progress):
            xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
            chunks.append(_attack_chunk(model, xc, yc, eps, version, attacks, seed, batch_size, device))
            if state_path is not None:
                _save_state(state_path, fingerprint, chunks)
    return _summarise(chunks, len(x))


def _summarise(chunks: list[dict], n: int) -> dict:
    clean = sum(sum(c["clean"]) for c in chunks)
    names = list(chunks[0]["after"]) if chunks else []
    per_attack = {name: sum(sum(c["after"][name]) for c in chunks) / n for name in names}
    robust = per_attack[names[-1]] if names else clean / n
    messages = [m for c in chunks for m in c.get("warnings", [])]  # states saved before had none
    return {
        "clean": clean / n,
        "robust": robust,
        "per_attack": per_attack,
        "n": n,
        "warnings": list(dict.fromkeys(messages)),
    }
