"""The proxy chain (scripts/gpu_proxy.sh) end to end on the CPU at tiny size, its return limits,
and its evaluation by `dualat.proxy.ingest`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from dualat import proxy, reports

ROOT = Path(__file__).resolve().parents[1]
TINY = [  # WRN-10-1, a few dozen images, one attack step: the whole chain in a few seconds
    "model.depth=10", "model.widen_factor=1", "data.n_train=24", "data.n_test=8", "data.n_ood=30",
    "data.workers=0", "stage1.epochs=1", "stage1.batch_size=8", "stage1.eval_n=8", "stage1.attack.steps=1",
    "ratio.ood_attack.steps=1", "stage2.images=24", "stage2.batch_size=8", "stage2.attack.steps=1",
    "stage2.sampler.T_max=2", "stage2.sampler.auc_window_images=8", "stage2.eval_every_images=24",
    "stage2.eval_n=8", "stage2.amp_bf16=false", "stage2.channels_last=false", "sample.n_samples=20",
    "sample.steps={\"standard_at\": 2, \"ratio\": 2, \"dualat\": 3}", "sample.batch_size=20", "sample.fid_ref_n=24",
    "stage2.eval_fid_samples=0", "sample.n_grid_samples=5",  # 5 seeds held out for selection, 25 left
]  # fmt: skip


def _shards(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("cifar10_train_00", 24), ("cifar10_test_00", 8), ("tinyimagenet32_train50pc_00", 30)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        np.savez(folder / f"{name}.npz", x=x, y=rng.integers(0, 10, n))


def _features(x: torch.Tensor) -> np.ndarray:
    """A stand-in for Inception: 8 fixed random projections of the pixels, (N, 8)."""
    w = torch.Generator().manual_seed(0)
    return (x.flatten(1) @ torch.randn(x[0].numel(), 8, generator=w)).double().numpy()


def test_gpu_proxy_script_runs_the_chain_and_ingest_evaluates_it(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    _shards(data)
    env = os.environ | {
        "PYTHON": sys.executable, "PROXY_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1", "PROXY_STAGE1_SHARE": "0.9"
    }  # fmt: skip
    env.pop("DUALAT_DATA", None)
    done = subprocess.run(
        ["bash", "scripts/gpu_proxy.sh", str(data), str(out), *TINY], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["run.json"] + [f"{m}.pt" for m in proxy.METHODS] + [f"samples_{m}.npz" for m in proxy.METHODS]
    )
    assert proxy.check_outputs(out) == []
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == {"standard_at": 3, "ratio": 3, "dualat": 3} and run["hardware"]["date"]
    assert run["stage1_epochs"] == {"planned": 1, "run": 1} and not (tmp_path / "work" / "probe").exists()
    with np.load(out / "samples_dualat.npz") as f:
        assert f["x"].shape == (20, 32, 32, 3) and f["x"].dtype == np.uint8 and int(f["steps"]) == 3
    state = torch.load(out / "dualat.pt")
    assert state["conv1.weight"].dtype == torch.float16

    cfg = proxy.run_config(out, ["evaluate.autoattack_n=2", "evaluate.pgd.steps=1"], data=str(data))
    summary = proxy.ingest(
        out, cfg, tmp_path / "results", features=_features, n_boot=3, kid_subset=10, n_samples=10, progress=False
    )
    for method in proxy.METHODS:
        m = summary["methods"][method]
        assert 0 <= m["clean_acc"] <= 1 and 0 <= m["autoattack_acc"] <= 1 and m["n_samples"] == 10  # the first 10 of 20
        assert np.isfinite(m["fid"]) and m["fid_boot_std"] >= 0 and np.isfinite(m["kid"])
    section = reports.proxy_section(tmp_path / "results" / "proxy.json")
    assert "Proxy profile" in section and run["hardware"]["date"] in section and "Dual-AT minus RATIO: FID" in section
    assert "stage 1 and RATIO ran 1 of 1 epochs" in section and "stage 2 ran 3 of 3 iterations" in section
    assert reports.proxy_section(tmp_path / "nowhere.json") == ""


def test_output_limits_are_checked(tmp_path):
    for i in range(9):
        (tmp_path / f"f{i}").write_bytes(b"0")
    (tmp_path / "big").write_bytes(b"0" * (proxy.FILE_BYTES + 1))
    problems = proxy.check_outputs(tmp_path)
    assert any("files >" in p for p in problems) and any(p.startswith("big:") for p in problems)


def test_stage2_is_cut_to_the_time_left():
    cfg = proxy.load_proxy_config(ROOT / "params.yaml", [])
    F = 0.785e9  # WRN-16-4
    fast, slow = (proxy.stage2_cap(cfg, F, s, 400.0) for s in (60.0, 240.0))
    assert fast > 3000 > slow >= 1  # stage 1 + RATIO (17 PFLOP) at 285 TFLOP/s leave room for 3000 steps, at 71 not
    assert proxy.stage2_cap(cfg, F, 240.0, 0.0) == 1


def test_stage1_epochs_are_fitted_to_the_time_given(tmp_path):
    _shards(tmp_path)
    cfg = proxy.load_proxy_config(ROOT / "params.yaml", [*TINY, "stage1.epochs=4"], str(tmp_path))
    assert proxy.fit_stage1(cfg, tmp_path / "probe", 0.0).stage1.epochs == 1  # no time: the minimum
    assert not (tmp_path / "probe").exists()
    assert proxy.fit_stage1(cfg, tmp_path / "probe", 1e6).stage1.epochs == 4  # never raised
