"""The proxy chain (scripts/gpu_proxy.sh) end to end on the CPU at tiny size, its return limits,
and its evaluation by `dualat.proxy.ingest`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dualat import proxy, proxy_eval, reports

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
        "PYTHON": sys.executable, "PROXY_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1", "PROXY_STAGE1_SHARE": "0.9",
        "PROXY_PARALLEL_RATIO": "1",  # the device session's chain: RATIO in a second process (docs/gpu_session.md)
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
    summary = proxy_eval.ingest(
        out, cfg, tmp_path / "results", features=_features, n_boot=3, kid_subset=10, n_samples=10, progress=False
    )
    assert summary["evaluated_on"] == {"accuracy.json": "this CPU", "generative.json": "this CPU"}
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
    fast, slow = (proxy.stage2_cap(cfg, F, 1 / flops, 400.0) for flops in (285e12, 71e12))
    # one iteration at T = 45 / 2 with 10 attack steps: F B (2 T + 2 K + 12) counted FLOPs
    per_step = F * 128 * (2 * 22.5 + 2 * 10 + 12)
    sampling = 4000 * 2 * F * (31 + 31 + 33)  # proxy: 4000 samples per model, Table 8's steps
    for got, flops in ((fast, 285e12), (slow, 71e12)):  # 400 s less 1.5x the sampling, over one iteration
        assert got == int((400.0 - 1.5 * sampling / flops) / (per_step / flops))
    assert fast > 4 * slow
    assert proxy.stage2_cap(cfg, F, 1 / 71e12, 0.0) == 1


def test_stage1_epochs_are_fitted_to_the_time_given(tmp_path):
    _shards(tmp_path)
    cfg = proxy.load_proxy_config(ROOT / "params.yaml", [*TINY, "stage1.epochs=4"], str(tmp_path))
    assert proxy.fit_stage1(cfg, tmp_path / "probe", 0.0).stage1.epochs == 1  # no time: the minimum
    assert not (tmp_path / "probe").exists()
    assert proxy.fit_stage1(cfg, tmp_path / "probe", 1e6).stage1.epochs == 4  # never raised


@pytest.fixture(scope="module")
def returned(tmp_path_factory) -> Path:
    """A returned run folder at tiny size (the chain in-process), made once for this module."""
    root = tmp_path_factory.mktemp("returned")
    (root / "data").mkdir()
    _shards(root / "data")
    cfg = proxy.load_proxy_config(ROOT / "params.yaml", TINY, str(root / "data"))
    proxy.run_chain(cfg, root / "out", root / "work", budget_s=1e6, progress=False)
    return root


def _run_folder(returned: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the returned run (data, out) that a test may change."""
    for name in ("data", "out"):
        shutil.copytree(returned / name, tmp_path / name)
    return tmp_path / "data", tmp_path / "out"


def test_device_parts_are_computed_where_the_run_lies_and_ingest_takes_them(returned, tmp_path, monkeypatch):
    """The device session's calls 2 and 3 (docs/gpu_session.md) at tiny size: `accuracy` and
    `generative` write their parts beside the run (the FID network joined from its carried parts,
    here a stand-in), and `ingest` then only reads them."""
    data, out = _run_folder(returned, tmp_path)
    cfg = proxy.run_config(out, ["evaluate.autoattack_n=2", "evaluate.pgd.steps=1"], data=str(data))
    acc = proxy_eval.accuracy_part(out, cfg, tmp_path / "device", progress=False)
    proxy_eval.write_part(out, "accuracy.json", acc, 1.0, proxy.hardware())
    gen = proxy_eval.generative_part(out, cfg, tmp_path / "device", features=_features, n_boot=3, kid_subset=10)
    proxy_eval.write_part(out, "generative.json", gen, 1.0, proxy.hardware())
    assert all((out / name).stat().st_size < 100_000 for name in proxy_eval.PARTS)  # each call returns one small file
    for m in proxy.METHODS:
        assert (
            acc[m]["n_test"] == 8
            and acc[m]["n_autoattack"] == 2
            and "AutoAttack standard, L2" in acc[m]["attacks"]["autoattack_acc"]
        )
        assert (
            gen[m]["n_samples"] == 20 and "20 class-balanced samples vs cifar10 train (first 24)" in gen[m]["protocol"]
        )

    def no_work(*a, **k):
        raise AssertionError("ingest recomputed a part that came back")

    monkeypatch.setattr(proxy_eval, "accuracy_part", no_work)
    monkeypatch.setattr(proxy_eval, "generative_part", no_work)
    summary = proxy_eval.ingest(out, cfg, tmp_path / "results", progress=False)
    assert summary["evaluated_on"] == {"accuracy.json": "GPU machine", "generative.json": "GPU machine"}
    assert summary["methods"]["dualat"]["fid"] == gen["dualat"]["fid"]
    assert "Proxy profile" in reports.proxy_section(tmp_path / "results" / "proxy.json")


def test_the_fid_network_travels_in_parts_and_is_joined_byte_for_byte(tmp_path):
    network = tmp_path / "inception-2015-12-05.pt"
    network.write_bytes(np.random.default_rng(0).bytes(100_001))
    manifest = proxy_eval.stage_kit(tmp_path / "kit", inception=network)
    parts = [tmp_path / "kit" / "inception" / p["name"] for p in manifest["parts"]]
    assert len(parts) == proxy_eval.INCEPTION_PARTS and max(p.stat().st_size for p in parts) <= 50_001
    for package in proxy_eval.KIT_PACKAGES:  # the sources, without example weights
        assert (tmp_path / "kit" / "site" / package / "__init__.py").exists()
    assert not list((tmp_path / "kit" / "site").rglob("*.pt"))
    joined = proxy_eval.join_inception(tmp_path / "kit" / "inception")
    assert joined.read_bytes() == network.read_bytes()
    joined.unlink()
    parts[1].write_bytes(parts[1].read_bytes()[:-1] + b"x")
    with pytest.raises(proxy_eval.ReturnedFileError, match="part1: sha256 differs"):
        proxy_eval.join_inception(tmp_path / "kit" / "inception")
    parts[1].unlink()
    with pytest.raises(proxy_eval.ReturnedFileError, match="part1: missing; carry it"):
        proxy_eval.join_inception(tmp_path / "kit" / "inception")


@pytest.mark.parametrize(
    "damage, named",
    [
        (
            lambda out: (out / "ratio.pt").write_bytes((out / "ratio.pt").read_bytes()[:1000]),
            "ratio.pt: not a readable",
        ),
        (lambda out: (out / "samples_dualat.npz").unlink(), "samples_dualat.npz: missing"),
        (
            lambda out: (out / "run.json").write_text((out / "run.json").read_text()[:200]),
            "run.json: not complete JSON",
        ),
        (lambda out: (out / "run.json").write_text('{"seconds": 1}'), "run.json: no key 'hardware'"),
    ],
)
def test_ingest_names_a_bad_returned_file_before_any_work(returned, tmp_path, damage, named):
    data, out = _run_folder(returned, tmp_path)
    damage(out)
    done = subprocess.run(
        [sys.executable, "-m", "dualat.proxy", "ingest", str(out), "--data", str(data), "--work", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode != 0 and named in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "r").exists()  # nothing was computed or written
