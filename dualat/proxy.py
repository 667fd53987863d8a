"""The proxy chain on one bare GPU machine, and its evaluation on the CPU afterwards.

`run_chain` (called by scripts/gpu_proxy.sh) trains stage 1, RATIO and stage 2 with the normal
`stages.train` under the `proxy` profile, draws class-conditional samples of each model and
writes at most 8 files (each < 16 MiB) to `out`:

    standard_at.pt, ratio.pt, dualat.pt   the reported weights as fp16 state dicts (~5.5 MB each)
    samples_<method>.npz                   x (N, 32, 32, 3) uint8 = round(255 x_T), y (N,) labels
    run.json                               seconds, FLOPs, steps, final T, hardware, date, settings

It needs only torch, torchvision, numpy, tqdm (and PyYAML, or a params.json): no papermill, DVC,
clean-fid or pyautoattack. Stage 2 keeps the final EMA model (no FID on the GPU machine: the
Inception weights are not carried) and is cut short when the measured speed of stage 1 predicts
that the whole chain would overrun `budget_s`.

`ingest(run_dir)` evaluates those files on the CPU with the normal code
(`evaluation.classification.accuracy`: clean, PGD, AutoAttack, ECE; Inception features for FID
with a bootstrap spread and KID) and writes results/proxy/proxy.json, which `reports.build`
shows as the proxy section.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dualat import artifacts, checkpoint, config, datasets, fid_reference, model_io, stages
from dualat.config import METHODS, Config
from dualat.data import test_transform
from dualat.generate import balanced_labels, generate, images_at, report_indices, seed_split, selection_size
from dualat.metrics import feature_stats, fid_from_stats, kid
from dualat.records import write_record

OUT_FILES = 8  # what comes back from the GPU machine: at most 8 files,
FILE_BYTES = 16 << 20  # each at most 16 MiB,
TOTAL_BYTES = 64 << 20  # 64 MiB in all
# The shards scripts/gpu_proxy.sh needs (57 MiB with the code, under the 64 MiB carry).
SHARDS = (
    "cifar10_train_00.npz",
    "cifar10_train_01.npz",
    "cifar10_train_02.npz",
    "cifar10_test_00.npz",
    "tinyimagenet32_train50pc_00.npz",
)
RESULTS = Path("results/proxy")
# absent from the bare GPU machine (matplotlib is there, but its import marks evaluation code on the GPU path)
HEAVY = ("papermill", "dvc", "cleanfid", "pyautoattack", "matplotlib")


# --- cost model -------------------------------------------------------------------------------------


def forward_flops(model: torch.nn.Module, image_size: int = 32) -> float:
    """FLOPs of one forward pass of one image (torch.utils.flop_counter; a multiply-add = 2)."""
    p = next(model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, image_size, image_size, device=p.device))
    return float(counter.get_total_flops())


def chain_flops(cfg: Config, F: float, T_mean: float, stage2_steps: int | None = None) -> dict[str, float]:
    """Counted-FLOP estimate of each part: an attack/sampler step ~2F per image, a training pass ~4F."""
    stage1, stage2, K = cfg.stage1, cfg.stage2, cfg.stage1.attack.steps
    steps1 = stage1.epochs * -(-cfg.data.n_train // stage1.batch_size)
    steps2 = -(-stage2.images // stage2.batch_size) if stage2_steps is None else stage2_steps
    n, T = cfg.sample.n_samples, cfg.sample.steps  # T: each method's number of sampling steps
    return {
        "standard_at": steps1 * stage1.batch_size * F * (2 * K + 4),
        "ratio": steps1 * stage1.batch_size * F * (2 * K + 4 + 2 * cfg.ratio.ood_attack.steps + 4),
        "dualat": steps2 * stage2.batch_size * F * (2 * T_mean + 2 * stage2.attack.steps + 12),
        "sampling": n * 2 * F * (T.standard_at + T.ratio + T.dualat),
    }


def hardware() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


# --- the GPU side ---------------------------------------------------------------------------------


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in fp16 (half the file; logits move by ~1e-3)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, round(255 x) as a PNG would store them."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def stage2_cap(cfg: Config, F: float, stage1_seconds: float, seconds_left: float) -> int:
    """Stage-2 steps that fit in `seconds_left`, at the speed stage 1 + RATIO ran (seconds per
    counted FLOP), planning with T at half its cap and 1.5x the sampling estimate. Conservative:
    on an H100 stage 2 ran at 40 TFLOP/s against stage 1's 30, and T reached 11 of 45 in 627
    iterations (docs/gpu_measurements.md)."""
    flops = chain_flops(cfg, F, 0.5 * cfg.stage2.sampler.T_max)
    s_per_flop = stage1_seconds / (flops["standard_at"] + flops["ratio"])
    steps2 = -(-cfg.stage2.images // cfg.stage2.batch_size)
    left = seconds_left - 1.5 * s_per_flop * flops["sampling"]
    return max(1, int(left / (s_per_flop * flops["dualat"] / steps2)))


PROBE_STEPS = (5, 25)  # RATIO steps run to warm up (cuDNN autotune, workers), then timed


def fit_stage1(cfg: Config, probe_dir: Path, seconds: float) -> Config:
    """`cfg` with `stage1.epochs` lowered (never raised) so that stage 1 + RATIO fit in `seconds`.

    Times PROBE_STEPS[1] RATIO steps (after PROBE_STEPS[0] warm-up steps, setup included: an
    overestimate) and scales a standard-AT step by its share of the counted FLOPs (2K + 4 of
    2K + 4 + 2K' + 4 forward units). The probe's folder is deleted afterwards."""
    warm, timed = PROBE_STEPS
    stages.train(cfg, "ratio", probe_dir, progress=False, stop_after=warm)
    t0 = time.time()
    stages.train(cfg, "ratio", probe_dir, progress=False, stop_after=warm + timed)
    s_ratio = (time.time() - t0) / timed
    shutil.rmtree(probe_dir)
    flops = chain_flops(cfg, 1.0, 0.0)
    s_epoch = -(-cfg.data.n_train // cfg.stage1.batch_size) * s_ratio * (1 + flops["standard_at"] / flops["ratio"])
    epochs = int(min(cfg.stage1.epochs, max(1, seconds // max(s_epoch, 1e-9))))
    print(
        f"stage-1 probe: {s_ratio * 1e3:.0f} ms per RATIO step -> {epochs} of {cfg.stage1.epochs} epochs fit {seconds:.0f} s"
    )
    return dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, epochs=epochs))


def export(
    cfg: Config, model: torch.nn.Module, method: str, seeds: torch.Tensor, labels: torch.Tensor, out: Path
) -> None:
    """out/<method>.pt (fp16 weights) and out/samples_<method>.npz, drawn from those fp16 weights
    so that what is evaluated afterwards is exactly what sampled."""
    weights = half_state(model)
    torch.save(weights, out / f"{method}.pt")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    T = getattr(cfg.sample.steps, method)
    x = generate(model, seeds, T, cfg.sample.step_size, labels, cfg.sample.batch_size)  # (N, 3, 32, 32) CPU
    np.savez_compressed(out / f"samples_{method}.npz", x=to_uint8(x), y=labels.numpy(), steps=T)


# The weights each method reports; dualat: the final EMA model (no FID on the GPU machine).
FILES = {"standard_at": "best.pt", "ratio": "best.pt", "dualat": "final.pt"}


def run_chain(
    cfg: Config,
    out: str | Path,
    work: str | Path,
    *,
    budget_s: float = 540.0,
    stage1_share: float | None = None,
    progress: bool = True,
) -> dict:
    """Stage 1, RATIO, stage 2 and sampling of the proxy profile; the files listed in the module doc.

    `work` holds the full checkpoints (not returned); `budget_s` is the wall-clock the chain may use.
    With `stage1_share`, stage 1 + RATIO get at most that share of it (`fit_stage1`; run.json
    records the epochs planned and run); stage 2 is cut to the time left in any case.
    """
    t_start = time.time()
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():  # TF32 for the fp32 parts (stage 1, attacks, sampling)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    reason = datasets.missing_data(cfg)
    if reason is not None:
        raise RuntimeError(str(reason))
    F = forward_flops(model_io.new_model(cfg))
    epochs_planned = cfg.stage1.epochs
    if stage1_share is not None:
        cfg = fit_stage1(cfg, work / "probe", stage1_share * budget_s - (time.time() - t_start))
    dirs = {m: work / "models" / cfg.data.dataset / m for m in METHODS}
    status, seconds, steps2 = _train_chain(cfg, dirs, F, t_start + budget_s, progress)
    t0 = time.time()
    _export_samples(cfg, dirs, out)
    seconds["sampling"] = time.time() - t0
    seconds["total"] = time.time() - t_start
    done = {m: status[m]["steps"] for m in METHODS}
    counted = chain_flops(cfg, F, status["dualat"]["T"] / 2 if status["dualat"]["T"] else 0, done["dualat"])
    info = {
        "hardware": hardware(),
        "seconds": seconds,
        "budget_s": budget_s,
        "forward_gflop": F / 1e9,
        "pflop": {k: v / 1e15 for k, v in counted.items()},
        "achieved_tflops": {k: counted[k] / seconds[k] / 1e12 for k in counted if seconds.get(k)},
        "steps": done,
        "stage1_epochs": {"planned": epochs_planned, "run": cfg.stage1.epochs},
        "stage2_steps_planned": steps2,
        "stage2_cut_short": done["dualat"] < steps2,
        "final_T": status["dualat"]["T"],
        "selected": {m: f"{m}/{FILES[m]}" for m in METHODS},
        "val": {m: status[m]["best"] for m in METHODS},
        "history": {m: _history(dirs[m]) for m in METHODS},
        "config": config.to_dict(cfg),
    }
    (out / "run.json").write_text(json.dumps(info, indent=1, default=str))
    return info


def _train_chain(
    cfg: Config, dirs: dict[str, Path], F: float, deadline: float, progress: bool
) -> tuple[dict[str, dict], dict[str, float], int]:
    """Train standard_at, ratio, then dualat from standard_at's best.pt, cut short to end by
    `deadline` (a time.time()) at the speed stage 1 ran; (statuses, seconds, planned stage-2 steps)."""
    seconds: dict[str, float] = {}
    status: dict[str, dict] = {}
    for method in ("standard_at", "ratio"):
        t0 = time.time()
        status[method] = stages.train(cfg, method, dirs[method], progress=progress)
        seconds[method] = time.time() - t0
    cap = stage2_cap(cfg, F, seconds["standard_at"] + seconds["ratio"], deadline - time.time())
    steps2 = -(-cfg.stage2.images // cfg.stage2.batch_size)
    t0 = time.time()
    status["dualat"] = stages.train(
        cfg, "dualat", dirs["dualat"], init=dirs["standard_at"] / "best.pt", progress=progress,
        stop_after=cap if cap < steps2 else None,
    )  # fmt: skip
    seconds["dualat"] = time.time() - t0
    return status, seconds, steps2


def _export_samples(cfg: Config, dirs: dict[str, Path], out: Path) -> None:
    """`export` each method's reported weights and samples from the pipeline's first reporting
    seeds (generate.seed_split: disjoint from the selection block)."""
    source = datasets.ood_set(cfg, test_transform(cfg.data.dataset))
    _, pool = seed_split(len(source), selection_size(cfg), cfg.sample.selection_seed)
    seeds = images_at(source, report_indices(pool, cfg.sample.n_samples, cfg.sample.seeds[0]))
    labels = balanced_labels(cfg.sample.n_samples, cfg.data.num_classes)
    for method in METHODS:
        export(cfg, model_io.load_model(cfg, dirs[method] / FILES[method]), method, seeds, labels, out)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _history(folder: Path) -> list:
    path = folder / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def check_outputs(out: str | Path) -> list[str]:
    """Problems with `out` against the return limits (empty when it fits)."""
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    problems = [f"{p.name}: {p.stat().st_size} bytes > {FILE_BYTES}" for p in files if p.stat().st_size > FILE_BYTES]
    if len(files) > OUT_FILES:
        problems.append(f"{len(files)} files > {OUT_FILES}")
    if sum(p.stat().st_size for p in files) > TOTAL_BYTES:
        problems.append(f"{sum(p.stat().st_size for p in files)} bytes in all > {TOTAL_BYTES}")
    return problems


# --- the CPU side -----------------------------------------------------------------------------------


def ingest(
    run_dir: str | Path,
    cfg: Config,
    out_dir: str | Path = RESULTS,
    *,
    features=None,
    n_boot: int = 5,
    n_samples: int | None = None,
    kid_subset: int = 1000,
    progress: bool = True,
) -> dict:
    """Evaluate the files of `run_chain` on this machine; write out_dir/proxy.json and return it.

    Per method: evaluation.classification.accuracy (clean on `data.n_test`, PGD, AutoAttack on
    `autoattack_n`, ECE) of the fp16 weights, FID of the samples to `sample.fid_ref_n` training
    images with the spread of `n_boot` bootstrap resamples of the samples, KID (mean, std over
    subsets); `n_samples` evaluates only the first that many samples (labels i mod K: balanced).
    `features` maps images (N, 3, H, W) in [0, 1] to (N, D) (default: the FID Inception network).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = json.loads((run_dir / "run.json").read_text())
    t0 = time.time()
    features = features or fid_reference.inception(cfg)
    ref_path = out_dir / "fid_ref" / "stats.npz"
    mu, sigma = fid_reference.reference_stats(cfg, ref_path, features)
    with np.load(ref_path.with_name("features.npz")) as f:
        real = f["feats"].astype(np.float64)
    rng = np.random.default_rng(cfg.sample.seeds[0])
    metrics: dict[str, Any] = {}
    for method in METHODS:
        acc = _accuracy_of_weights(run_dir, cfg, method, out_dir, progress)
        with np.load(run_dir / f"samples_{method}.npz") as f:
            x = torch.from_numpy(f["x"][:n_samples]).permute(0, 3, 1, 2).float() / 255
            steps = int(f["steps"])
        feats = features(x)
        boots = [
            fid_from_stats(*feature_stats(feats[rng.integers(0, len(feats), len(feats))]), mu, sigma)
            for _ in range(n_boot)
        ]
        k = kid(feats, real, cfg.sample.kid_subsets, min(kid_subset, len(feats), len(real)), cfg.sample.seeds[0])
        metrics[method] = acc | {
            "fid": fid_from_stats(*feature_stats(feats), mu, sigma),
            "fid_boot_std": float(np.std(boots, ddof=1)) if n_boot > 1 else None,
            "kid": k["mean"],
            "kid_std": k["std"],
            "n_samples": len(feats),
            "steps": steps,
        }
    keys = ("hardware", "seconds", "steps", "final_T", "stage2_cut_short", "forward_gflop", "achieved_tflops")
    planned = ("stage1_epochs", "stage2_steps_planned")  # what the run was sized for (runs of before: absent)
    summary = {"methods": metrics, "run": {k: run[k] for k in keys} | {k: run[k] for k in planned if k in run}}
    write_record(
        out_dir / "proxy.json", summary, config=config.to_dict(cfg), checkpoint=None, wall_seconds=time.time() - t0
    )
    return summary


def _accuracy_of_weights(run_dir: Path, cfg: Config, method: str, out_dir: Path, progress: bool) -> dict:
    """Clean, PGD and AutoAttack accuracy of run_dir/<method>.pt (fp16 weights, evaluated in fp32
    as out_dir/models/<method>/model.pt with the pipeline's accuracy evaluation)."""
    from dualat.evaluation.classification import accuracy  # lazy: evaluation is for the CPU side only

    state = torch.load(run_dir / f"{method}.pt", map_location="cpu")
    folder = out_dir / "models" / method
    fp32 = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    checkpoint.save(folder / "model.pt", {"model": fp32})
    artifacts.write_status(folder, None, method=method, source=str(run_dir))
    acc = accuracy(cfg, method, folder / "model.pt", out_dir / method, progress=progress)
    return {
        "clean_acc": acc["clean_acc"],
        "pgd_acc": acc["pgd_acc"],
        "autoattack_acc": acc["autoattack"]["robust_acc"],
        "n_test": acc["n_test"],
        "n_autoattack": acc["autoattack"]["n"],
    }


# --- command line ---------------------------------------------------------------------------------


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: list[str]) -> dict[str, Any]:
    return {k: _value(v) for k, v in (p.split("=", 1) for p in pairs)}


def load_proxy_config(params: str | Path, overrides: list[str], data: str | None = None) -> Config:
    """The proxy profile's CIFAR-10 config with KEY=VALUE overrides (VALUE as JSON, else a string)."""
    cfg = config.load(params, dataset="cifar10", profile="proxy", overrides=_overrides(overrides))
    return dataclasses.replace(cfg, data_root=data) if data else cfg


def run_config(run_dir: str | Path, overrides: list[str] = (), data: str | None = None) -> Config:
    """The settings a run was made with (its run.json), with KEY=VALUE overrides (e.g. evaluate.*)."""
    raw = copy.deepcopy(json.loads((Path(run_dir) / "run.json").read_text())["config"])
    for dotted, value in _overrides(list(overrides)).items():
        config._set_dotted(raw, dotted, value)
    sections = {name: config.build(cls, raw[name], name) for name, cls in config.SECTIONS.items()}
    return Config(profile=raw["profile"], data_root=data if data is not None else raw["data_root"], **sections)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dualat.proxy", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and sample the proxy chain (GPU machine)")
    run.add_argument("--data", required=True, help="folder with the shards (dualat.proxy.SHARDS)")
    run.add_argument("--out", required=True, help="the folder that comes back (at most 8 files)")
    run.add_argument("--work", default="proxy-work", help="full checkpoints (not returned)")
    run.add_argument("--budget-s", type=float, default=540.0, help="wall-clock the chain may use")
    run.add_argument("--stage1-share", type=float, default=None, help="fit stage 1 + RATIO epochs to this share")
    ing = sub.add_parser("ingest", help="evaluate a returned folder on this machine (CPU)")
    ing.add_argument("run_dir")
    ing.add_argument("--data", default=None, help="data root (default: params.yaml's, $DUALAT_DATA)")
    ing.add_argument("--out", default=str(RESULTS))
    ing.add_argument("--n-samples", type=int, default=None, help="evaluate the first N samples (default all)")
    ing.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="on top of the run's settings")
    stage = sub.add_parser("stage", help="copy the shards the GPU machine needs into a folder")
    stage.add_argument("source", help="e.g. ../shared/datasets")
    stage.add_argument("dest", nargs="?", default="data/proxy")
    js = sub.add_parser("params-json", help="write params.yaml as params.json (for a machine without PyYAML)")
    js.add_argument("--out", default="params.json")
    run.add_argument("--params", default="params.yaml", help="or a params.json (see params-json)")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. stage2.images=1280")
    args = ap.parse_args(argv)
    if args.command == "stage":
        Path(args.dest).mkdir(parents=True, exist_ok=True)
        for name in SHARDS:
            shutil.copy2(Path(args.source) / name, Path(args.dest) / name)
        print(
            f"{len(SHARDS)} shards, {sum((Path(args.dest) / n).stat().st_size for n in SHARDS) / 2**20:.1f} MiB in {args.dest}"
        )
        return
    if args.command == "params-json":
        Path(args.out).write_text(json.dumps(config.read_params("params.yaml"), indent=1))
        return
    if args.command == "run":
        cfg = load_proxy_config(args.params, args.overrides, args.data)
        info = run_chain(cfg, args.out, args.work, budget_s=args.budget_s, stage1_share=args.stage1_share)
        problems = check_outputs(args.out)
        heavy = [name for name in HEAVY if name in sys.modules]  # must not be needed on the GPU machine
        if heavy:
            problems.append(f"imported {', '.join(heavy)}")
        print(
            json.dumps(
                {k: info[k] for k in ("seconds", "steps", "stage1_epochs", "final_T", "achieved_tflops")}, indent=1
            )
        )
        if problems:
            raise SystemExit("outputs over the return limits: " + "; ".join(problems))
    else:
        cfg = run_config(args.run_dir, args.overrides, args.data)
        print(json.dumps(ingest(args.run_dir, cfg, args.out, n_samples=args.n_samples), indent=1, default=str))


if __name__ == "__main__":
    main()
