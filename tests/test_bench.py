"""Stage-2 speed settings: the bench script prints its table, and bf16 autocast of the whole
iteration (attack, sampler, loss pass) stays close to the exact fp32 step."""

import copy
import dataclasses
from pathlib import Path

import torch

from dualat.train import freeze_bn, stage2_step

ROOT = Path(__file__).resolve().parents[1]


def test_bench_stage2_prints_its_table(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_stage2", ROOT / "scripts" / "bench_stage2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--depth", "10", "--width", "1", "--batch", "2", "--T", "1", "--iters", "1", "--warmup", "0"]
    bench.main([*args, "--device", "cpu", "--variants", "fp32 unfused", "bf16 fused channels_last", "cudagraphs"])
    out = capsys.readouterr().out
    assert "| fp32 unfused " in out and "| bf16 fused channels_last" in out and "skipped: CUDA graphs" in out
    assert "failed" not in out


def test_bench_compares_bf16_with_fp32_trajectories(capsys, monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("DUALAT_DATA", str(tmp_path))  # no shards there: random images
    spec = importlib.util.spec_from_file_location("bench_stage2", ROOT / "scripts" / "bench_stage2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--compare-bf16", "2", "--batch", "4"])
    out = capsys.readouterr().out
    assert "random images" in out and "| 1-1 |" in out and "# T raised at steps" in out


def test_bf16_stage2_step_is_close_to_fp32(tiny_wrn):
    from dualat import config

    cfg = config.load(ROOT / "params.yaml", profile="quick").stage2
    g = torch.Generator().manual_seed(0)
    x, x_hat, x0 = (torch.rand(8, 3, 32, 32, generator=g) for _ in range(3))
    y, y_hat = (torch.randint(0, 10, (8,), generator=g) for _ in range(2))
    grads, losses = [], []
    for bf16 in (False, True):
        m = freeze_bn(copy.deepcopy(tiny_wrn))
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: keep the weights, read the gradients
        loss, _ = stage2_step(m, opt, dataclasses.replace(cfg, amp_bf16=bf16), (x, y, x_hat, y_hat, x0), T=3)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        losses.append(float(loss.detach()))
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.98, cos  # bf16 keeps 8 bits of mantissa: the update direction barely moves
    assert abs(losses[0] - losses[1]) < 0.05 * losses[0], losses
