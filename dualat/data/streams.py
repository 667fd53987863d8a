"""Deterministic, resumable loaders and the three stage-2 batch streams (Algorithm 1, lines 1-3).

Reproducibility does not depend on global RNG state, worker count or where a run was resumed:
- the sample order of epoch e is a function of (seed, e);
- sample i of epoch e is loaded (and augmented) with torch/random/numpy RNGs seeded from
  (seed, e, i) and restored afterwards (SeededSamples).
A stream's position is (epoch, batch), so a resumed stream rebuilds epoch e's order and skips the
batches already seen, without loading them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Item = TypeVar("Item")  # not `T`: that is the paper's number of sampling steps
# Tags that keep the seeds derived for different uses apart.
_ORDER, _AUGMENT, _STREAM, _WORKERS = 0, 1, 2, 3


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys (numpy SeedSequence)."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


@contextmanager
def rng_scope(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU, Python's and numpy's global RNGs seeded from `seed`, then
    restore their previous states."""
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


class SeededSamples(Dataset):
    """`dataset` indexed by keys (epoch, i): item i loaded under rng_scope(f(seed, epoch, i)), so
    its augmentation is reproducible. A plain int key i means (0, i)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        with rng_scope(derive_seed(self.seed, _AUGMENT, epoch, i)):
            return self.dataset[i]


def epoch_order(
    n: int,
    epoch: int,
    seed: int,
    *,
    shuffle: bool = True,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices (n,) visited in `epoch`: a permutation from (seed, epoch); range(n) if not
    `shuffle`; with `weights` (n,) n draws with replacement proportional to them."""
    g = torch.Generator().manual_seed(derive_seed(seed, _ORDER, epoch))
    if weights is not None:
        if len(weights) != n:
            raise ValueError(f"sampler weights have {len(weights)} entries for {n} items")
        return torch.multinomial(weights.double(), n, replacement=True, generator=g)
    return torch.randperm(n, generator=g) if shuffle else torch.arange(n)


class EpochBatches(Sampler):
    """Batch sampler yielding lists of (epoch, index) keys for SeededSamples: the batches of
    epoch `epoch` from batch number `skip` on (EpochLoader advances `epoch`). With
    `part=(rank, world)` each batch of `batch_size` (the global batch) is cut into `world` equal
    slices and slice `rank` is yielded: the global batches do not depend on `world`."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        weights: torch.Tensor | None = None,
        epoch: int = 0,
        skip: int = 0,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size % part[1]:
            raise ValueError(f"a global batch of {batch_size} does not split evenly over {part[1]} processes")
        self.n, self.batch_size, self.seed, self.part = n, batch_size, seed, part
        self.shuffle, self.drop_last, self.weights = shuffle, drop_last, weights
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[list[tuple[int, int]]]:
        """The batches of `epoch` from batch number `skip` on."""
        order = epoch_order(self.n, epoch, self.seed, shuffle=self.shuffle, weights=self.weights)
        order = order.tolist()
        rank, world = self.part
        for b in range(skip, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            share = len(batch) // world  # a short last batch (drop_last False) only with world 1
            yield [(epoch, i) for i in batch[rank * share : (rank + 1) * share]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # No side effects here: DataLoader may call iter() on its sampler more than once.
        return self.batches(self.epoch, self.skip)


class EpochLoader(DataLoader):
    """DataLoader over EpochBatches in which each iteration is the next epoch."""

    def __iter__(self) -> Any:
        batches = super().__iter__()  # binds the sampler's current (epoch, skip)
        self.batch_sampler.epoch += 1
        self.batch_sampler.skip = 0
        return batches


def _seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's RNGs in a worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _loader(dataset: Dataset, sampler: EpochBatches, workers: int, seed: int) -> EpochLoader:
    return EpochLoader(
        SeededSamples(dataset, sampler.seed),
        batch_sampler=sampler,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if workers > 0 else None,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    workers: int = 0,
    sampler_weights: torch.Tensor | None = None,
) -> DataLoader:
    """DataLoader whose batches (order and augmentation) depend only on `seed` and the epoch,
    for any `workers`. Iterating it again gives the next epoch. With `sampler_weights` (N,) each
    epoch draws N samples with replacement proportional to the weights. Images (B, C, H, W).

    To resume at epoch e (batch b), set `loader.batch_sampler.epoch = e` (`.skip = b`).
    """
    sampler = EpochBatches(
        len(dataset),
        batch_size,
        seed,
        shuffle=shuffle,
        drop_last=drop_last,
        weights=sampler_weights,
    )
    return _loader(dataset, sampler, workers, seed)


def infinite(loader: Iterable[Item]) -> Iterator[Item]:
    """Yield the batches of `loader` forever, epoch after epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches (dataset smaller than a batch?)")


class BatchStream:
    """Infinite, resumable stream of batches: next() gives (images (B, C, H, W), labels (B,)).

    Batches are full (drop_last) and epochs follow each other; state_dict() is the position of
    the next batch, and load_state_dict() makes a fresh stream continue exactly from there.
    With `part=(rank, world)` (`dualat.distributed.part`) B = batch_size / world: this process's
    slice of the global batch of `batch_size`; positions count global batches, so a state resumes
    with any `world`.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        workers: int = 0,
        weights: torch.Tensor | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        self.dataset, self.seed, self.workers = dataset, seed, workers
        self.sampler = EpochBatches(
            len(dataset),
            batch_size,
            seed,
            shuffle=shuffle,
            drop_last=True,
            weights=weights,
            part=part,
        )
        if len(self.sampler) == 0:
            raise ValueError(f"dataset of {len(dataset)} items is smaller than a batch ({batch_size})")
        self.epoch, self.batch = 0, 0  # position of the next batch
        self._batches: Iterator[Any] | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self.batch == len(self.sampler):
            self.epoch, self.batch, self._batches = self.epoch + 1, 0, None
        if self._batches is None:
            self.sampler.epoch, self.sampler.skip = self.epoch, self.batch
            seed = derive_seed(self.seed, _WORKERS, self.epoch)
            self._batches = iter(_loader(self.dataset, self.sampler, self.workers, seed))
        out = next(self._batches)
        self.batch += 1
        return out

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch, plus what must match on resume."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "batch": self.batch,
            "batch_size": self.sampler.batch_size,
            "n": self.sampler.n,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state` (from state_dict() of a stream over the same data and seed)."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "n"):
            if state[key] != mine[key]:
                raise ValueError(f"stream state has {key}={state[key]}, this stream {mine[key]}")
        self.epoch, self.batch, self._batches = state["epoch"], state["batch"], None


class Stage2Batch(NamedTuple):
    """One stage-2 iteration's inputs, images (B, C, H, W) in [0, 1], labels (B,) int64."""

    x: torch.Tensor  # aggressive augmentation, for L_AT-CE
    y: torch.Tensor
    x_hat: torch.Tensor  # mild augmentation, positives of L_BCE
    y_hat: torch.Tensor  # their labels: the targets y' of the contrastive samples
    x0: torch.Tensor  # OOD seeds of the contrastive samples, mild augmentation


class Stage2Streams:
    """Three independent infinite streams: classification (cls), generation (gen), OOD (ood).
    next() gives a Stage2Batch; state_dict()/load_state_dict() resume all three."""

    def __init__(self, cls: BatchStream, gen: BatchStream, ood: BatchStream) -> None:
        self.cls, self.gen, self.ood = cls, gen, ood

    def __iter__(self) -> Stage2Streams:
        return self

    def __next__(self) -> Stage2Batch:
        x, y = next(self.cls)
        x_hat, y_hat = next(self.gen)
        x0, _ = next(self.ood)
        return Stage2Batch(x, y, x_hat, y_hat, x0)

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {
            "cls": self.cls.state_dict(),
            "gen": self.gen.state_dict(),
            "ood": self.ood.state_dict(),
        }

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        for name in ("cls", "gen", "ood"):
            getattr(self, name).load_state_dict(state[name])


def stage2_streams(
    train_set_cls: Dataset,
    train_set_gen: Dataset,
    ood_set: Dataset,
    batch_size: int,
    seed: int,
    workers: int = 0,
    train_weights: torch.Tensor | None = None,
    part: tuple[int, int] = (0, 1),
) -> Stage2Streams:
    """Stage-2 streams over the training set with the aggressive (`train_set_cls`) and the mild
    (`train_set_gen`) augmentation and over p_ood (`ood_set`, mild augmentation). Their seeds
    are derived from `seed` and differ, so the three never share order or augmentation.
    `train_weights` (N,) (e.g. restricted_imagenet(balance=True).sample_weights) reweights
    the two training streams; `workers` is per stream; `part` as for BatchStream (`batch_size` global)."""
    seeds = [derive_seed(seed, _STREAM, k) for k in range(3)]
    return Stage2Streams(
        BatchStream(train_set_cls, batch_size, seeds[0], workers=workers, weights=train_weights, part=part),
        BatchStream(train_set_gen, batch_size, seeds[1], workers=workers, weights=train_weights, part=part),
        BatchStream(ood_set, batch_size, seeds[2], workers=workers, part=part),
    )
