"""DDP on the CPU: two gloo processes (torch.multiprocessing.spawn) train on their shards of a
small TensorDataset; the parent checks what they wrote."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from dualat import checkpoint, distributed
from dualat.data import BatchStream
from dualat.models import WideResNet
from dualat.train import freeze_bn, stage2_step, train_stage1, train_stage2
from tests.test_train import STAGE1, STAGE2, _data, _model, _test_xy

WORLD = 2
LR = 0.1  # plain SGD of the one-step check: p <- p - LR * grad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _streams(rank: int) -> tuple[BatchStream, BatchStream, BatchStream]:
    """The rank's shards of the three training sets, 16 of 32 items each: 2 batches an epoch."""
    return tuple(BatchStream(distributed.shard(_data(seed=k), rank, WORLD), 8, k) for k in range(3))


def _stage2_batch(rank: int) -> tuple[torch.Tensor, ...]:
    (x, y), (x_hat, y_hat), (x0, _) = (next(s) for s in _streams(rank))
    return x, y, x_hat, y_hat, x0


def _worker(rank: int, port: int, tmp) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env() == (rank, WORLD)
    try:
        out = {}
        model = _model()
        c, g, o = _streams(rank)  # output folders per rank, to see who writes
        out["stage2"] = train_stage2(model, STAGE2, c, g, o, _test_xy(), tmp / f"stage2_rank{rank}", progress=False)
        out["stage2"]["state"] = model.state_dict()
        for stop_after in (3, None):  # killed after 3 steps, resumed by both ranks from one folder
            model = _model()
            c, g, o = _streams(rank)
            r = train_stage2(model, STAGE2, c, g, o, _test_xy(), tmp / "resumed", stop_after=stop_after, progress=False)
        out["resumed"] = r | {"state": model.state_dict()}
        model = _model()
        s, _, _ = _streams(rank)
        out["stage1"] = train_stage1(model, STAGE1, s, 2, _test_xy(), tmp / f"stage1_rank{rank}", progress=False)
        out["stage1"]["state"] = model.state_dict()
        model = freeze_bn(_model())  # one DDP step of stage 2
        opt = torch.optim.SGD(model.parameters(), LR)
        stage2_step(model, opt, STAGE2, _stage2_batch(rank), 2, loss_model=distributed.wrap(model))
        out["step"] = model.state_dict()
        torch.manual_seed(rank)  # other weights and BN statistics on each rank, until wrap
        model = WideResNet(10, 1, 10)
        with torch.no_grad():
            model(torch.rand(4, 3, 32, 32))
        distributed.wrap(model)
        out["wrapped"] = model.state_dict()
        torch.save(out, tmp / f"out{rank}.pt")
    finally:
        distributed.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), tmp), nprocs=WORLD, join=True)
    return tmp, [torch.load(tmp / f"out{r}.pt", weights_only=False) for r in range(WORLD)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_end_with_identical_weights_history_and_T(runs):
    tmp, (r0, r1) = runs
    for stage in ("stage2", "stage1"):
        assert r0[stage]["history"] == r1[stage]["history"] and r0[stage]["best"] == r1[stage]["best"]
        assert _equal(r0[stage]["state"], r1[stage]["state"])  # stage 1: BN buffers too
        assert _equal(r1[stage]["state"], checkpoint.load(tmp / f"{stage}_rank0" / "last.pt")["model"])
    assert [h["T"] for h in r0["stage2"]["history"]] == [h["T"] for h in r1["stage2"]["history"]]
    assert r0["stage2"]["T"] == r1["stage2"]["T"]


def test_wrap_copies_rank_0_weights_and_buffers(runs):
    _, (r0, r1) = runs
    assert _equal(r0["wrapped"], r1["wrapped"])


def test_only_rank_0_writes(runs):
    tmp, _ = runs
    for stage in ("stage1", "stage2"):
        assert (tmp / f"{stage}_rank0" / "last.pt").exists() and (tmp / f"{stage}_rank0" / "history.json").exists()
        assert not (tmp / f"{stage}_rank1").exists()


def test_resumed_run_equals_uninterrupted(runs):
    _, (r0, r1) = runs
    assert r0["resumed"]["steps"] == r1["resumed"]["steps"] == 8
    assert _equal(r0["resumed"]["state"], r1["resumed"]["state"])
    assert _equal(r0["resumed"]["state"], r0["stage2"]["state"])
    assert [h["T"] for h in r0["resumed"]["history"]] == [h["T"] for h in r0["stage2"]["history"]]


def test_ddp_step_equals_step_with_mean_gradient(runs):
    """One DDP stage-2 step on two shards = one step along the mean of the two single-process
    gradients (attack and sampler on each rank's own batch, loss gradients averaged)."""
    _, (r0, r1) = runs
    grads = []
    for rank in range(WORLD):
        model = freeze_bn(_model())
        stage2_step(model, torch.optim.SGD(model.parameters(), 0.0), STAGE2, _stage2_batch(rank), 2)
        grads.append({k: p.grad for k, p in model.named_parameters()})
    start = freeze_bn(_model()).state_dict()
    for k, p in start.items():
        expected = p - LR * (grads[0][k] + grads[1][k]) / 2 if k in grads[0] else p
        assert torch.allclose(r0["step"][k], expected, atol=1e-6, rtol=1e-5), k
        assert torch.equal(r0["step"][k], r1["step"][k]), k
