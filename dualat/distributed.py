"""Inside the processes torchrun starts (`dualat.launch`): one process per GPU, gradients
averaged by DistributedDataParallel (DDP), evaluation work split by index ranges.

Batch sizes in params.yaml are GLOBAL: every process draws the same global batch from one
seeded order (`dualat.data.BatchStream`) and takes its slice `part()`, so the images of a step
do not depend on the number of processes, and one last.pt resumes with any number of them
(docs/gpus.md). Evaluation loops take their batches' `spans` and merge with `gather`.

Without torchrun (no RANK / WORLD_SIZE in the environment) nothing here is initialised and every
helper is the identity: world size 1, rank 0, the main process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> tuple[int, int]:
    """(rank, world_size) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK; joins the process group
    (NCCL on GPUs, else gloo) and makes GPU LOCAL_RANK the current device. (0, 1) without them."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(gpu)  # "cuda" means this GPU from now on
            dist.init_process_group("nccl", device_id=gpu)
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def close() -> None:
    """Leave the process group (after a barrier); nothing without one."""
    if _active():
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over all processes (a new tensor, same device); `t` itself without DDP."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / world_size()


def all_mean_stats(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dict of 0-d tensors averaged over all processes in one all-reduce."""
    if world_size() == 1 or not stats:
        return stats
    means = all_mean(torch.stack([v.float() for v in stats.values()]))
    return dict(zip(stats, means.unbind()))


def sync_buffers(model: nn.Module) -> None:
    """Average the floating buffers (BN running mean / var) over all processes, in place.

    Every process updates them with its own batch; the mean of the running means is exactly the
    running mean of the global batch (equal shards), the variance an approximation."""
    buffers = [b for b in model.buffers() if b.dtype.is_floating_point]
    if world_size() == 1 or not buffers:
        return
    flat = all_mean(torch.cat([b.reshape(-1) for b in buffers]))
    for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
        b.copy_(value.view_as(b))


def wrap(model: nn.Module) -> nn.Module:
    """`model` under DDP (gradients averaged over processes on backward) when distributed, else
    `model` itself. Run only the training loss through the wrapper; attacks and samplers use the
    bare module, as their input gradients need no synchronisation. Construction copies rank 0's
    weights and buffers to every rank. Buffers are not broadcast at each forward:
    stage 1 keeps them equal with `sync_buffers`, stage 2 freezes them."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)


def part() -> tuple[int, int]:
    """(rank, world size): which slice of each global batch this process takes."""
    return rank(), world_size()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """The tensors `t` of all ranks (equal shapes) concatenated along dim 0 in rank order, i.e.
    the global batch's values when each rank holds its slice; `t` itself without DDP."""
    if world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts)


def spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """This rank's batches (start, stop) of items 0..n-1: the batches of one process (batch_size
    each, the last one shorter) cut into world_size contiguous runs, so every batch holds the same
    items as in one process and the ranks' results concatenated in rank order are in item order."""
    starts = list(range(0, n, batch_size))
    world, r = world_size(), rank()
    lo, hi = len(starts) * r // world, len(starts) * (r + 1) // world
    return [(s, min(s + batch_size, n)) for s in starts[lo:hi]]


def main_first(fn: Callable[[], Any]) -> Any:
    """fn() on rank 0, then on the other ranks: rank 0 fills a cache (e.g. the FID reference
    statistics) that the others then read instead of writing it at the same time."""
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def gather(obj: Any) -> list[Any]:
    """`obj` of every rank (any picklable value), in rank order, on every rank; [obj] without DDP."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
