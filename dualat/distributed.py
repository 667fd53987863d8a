"""Data-parallel training with `torchrun`: one process per GPU, gradients averaged by
DistributedDataParallel (DDP).

    torchrun --nproc_per_node=4 scripts/train_ddp.py --dataset cifar10 --method standard_at

Batch sizes in params.yaml are PER PROCESS: with N processes one optimizer step sees N x
batch_size images (the learning rate is not rescaled). Each process streams its own shard of
every training set (`shard`); all processes use the same seeds, so their streams step in
lockstep and have identical state_dicts, and one last.pt resumes every rank (with the same
number of processes: a stream refuses a state saved for another shard size).

Without torchrun (no RANK / WORLD_SIZE in the environment) nothing here is initialised and every
helper is the identity: world size 1, rank 0, the main process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset


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


def shard(dataset: Dataset, rank: int, world: int) -> Subset:
    """Items rank, rank + world, ... of `dataset`, len(dataset) // world of them on every rank
    (the last len(dataset) % world items are left out), so all ranks' streams have the same length."""
    n = len(dataset) // world * world
    return Subset(dataset, list(range(rank, n, world)))
