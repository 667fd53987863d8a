"""The proxy chain on one bare GPU machine, and its evaluation on the CPU afterwards.

`run_chain` (called by scripts/gpu_proxy.sh) trains stage 1, RATIO and stage 2 with the normal
`stages.train` under the `proxy` profile, draws class-conditional samples of each model and
writes at most 8 files (each < 16 MiB) to `out`:

    standard_at.pt, ratio.pt, dualat.pt   the reported weights as fp16 state dicts (~5.5 MB each)
    samples_<method>.npz                   x (N, 32, 32, 3) uint8 = round(255 x_T), y (N,) labels
    run.json                               seconds, FLOPs, steps, final T, hardware, date, settings

It needs only torch, torchvision, numpy, tqdm (and PyYAML, or a params.json): no papermill, DVC,
clean-fid or pyautoattack. With `parallel_ratio` RATIO trains in a second process beside stage 1
and stage 2 (a small model at B = 128 is launch-bound: the GPU has room for both). Stage 2 keeps
the final EMA model (the chain's call carries no Inception weights) and is cut short when the
measured speed of stage 1 predicts that the whole chain would overrun `budget_s`.

The evaluation of those files (`dualat.proxy_eval`: accuracy and AutoAttack, Inception features,
FID and KID) runs in the same device session, in two short calls after the chain
(docs/gpu_session.md), or on the CPU by `ingest`, which writes results/proxy/proxy.json for the
report's proxy section.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dualat import config, datasets, model_io, proxy_eval, stages
from dualat.config import METHODS, Config
from dualat.data import test_transform
from dualat.generate import balanced_labels, generate, images_at, report_indices, seed_split, selection_size

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


def stage2_cap(cfg: Config, F: float, s_per_flop: float, seconds_left: float) -> int:
    """Stage-2 steps that fit in `seconds_left`, at `s_per_flop` (the seconds per counted FLOP
    stage 1 ran at), planning with T at half its cap and 1.5x the sampling estimate. Conservative:
    on an H100 stage 2 ran at 40 TFLOP/s against stage 1's 30 (docs/gpu_measurements.md)."""
    flops = chain_flops(cfg, F, 0.5 * cfg.stage2.sampler.T_max)
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
    parallel_ratio: bool = False,
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
    status, seconds, steps2 = _train_chain(cfg, dirs, F, t_start + budget_s, progress, parallel_ratio)
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
    cfg: Config, dirs: dict[str, Path], F: float, deadline: float, progress: bool, parallel_ratio: bool = False
) -> tuple[dict[str, dict], dict[str, float], int]:
    """Train standard_at, ratio, then dualat from standard_at's best.pt, cut short to end by
    `deadline` (a time.time()) at the speed stage 1 ran; (statuses, seconds, planned stage-2 steps).
    With `parallel_ratio`, RATIO runs in a spawned process from the start to the end."""
    seconds: dict[str, float] = {}
    status: dict[str, dict] = {}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ratio = pool.submit(timed_train, cfg, "ratio", dirs["ratio"]) if parallel_ratio else None
        timed = ("standard_at",) if parallel_ratio else ("standard_at", "ratio")
        for method in timed:
            status[method], seconds[method] = timed_train(cfg, method, dirs[method], progress)
        flops = chain_flops(cfg, F, 0.0)
        s_per_flop = sum(seconds.values()) / sum(flops[m] for m in timed)
        cap = stage2_cap(cfg, F, s_per_flop, deadline - time.time())
        steps2 = -(-cfg.stage2.images // cfg.stage2.batch_size)
        t0 = time.time()
        status["dualat"] = stages.train(
            cfg, "dualat", dirs["dualat"], init=dirs["standard_at"] / "best.pt", progress=progress,
            stop_after=cap if cap < steps2 else None,
        )  # fmt: skip
        seconds["dualat"] = time.time() - t0
        if ratio is not None:
            status["ratio"], seconds["ratio"] = ratio.result()
    return status, seconds, steps2


def timed_train(cfg: Config, method: str, folder: Path, progress: bool = False) -> tuple[dict, float]:
    """(stages.train's status, seconds) of one stage-1 method; a module-level function, so that a
    spawned process can run it."""
    t0 = time.time()
    return stages.train(cfg, method, folder, progress=progress), time.time() - t0


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
    return dataclasses.replace(config.from_dict(raw), data_root=data if data is not None else raw["data_root"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dualat.proxy", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and sample the proxy chain (GPU machine)")
    run.add_argument("--data", required=True, help="folder with the shards (dualat.proxy.SHARDS)")
    run.add_argument("--out", required=True, help="the folder that comes back (at most 8 files)")
    run.add_argument("--work", default="proxy-work", help="full checkpoints (not returned)")
    run.add_argument("--budget-s", type=float, default=540.0, help="wall-clock the chain may use")
    run.add_argument("--stage1-share", type=float, default=None, help="fit stage 1 + RATIO epochs to this share")
    run.add_argument("--parallel-ratio", action="store_true", help="train RATIO in a second process")
    run.add_argument("--params", default="params.yaml", help="or a params.json (see params-json)")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. stage2.images=1280")
    for name, text in (
        ("accuracy", "clean, PGD and AutoAttack accuracy of a run's models -> RUN_DIR/accuracy.json (GPU machine)"),
        ("generative", "FID and KID of a run's samples -> RUN_DIR/generative.json (GPU machine)"),
        ("ingest", "check a returned folder, compute what did not come back, write results/proxy/proxy.json"),
    ):
        part = sub.add_parser(name, help=text)
        part.add_argument("run_dir")
        part.add_argument("--data", default=None, help="data root (default: the run's, then $DUALAT_DATA)")
        part.add_argument("--work", default=str(proxy_eval.RESULTS), help="evaluation records and caches")
        part.add_argument("--copy-to", default=None, help="also copy the JSON written here (e.g. $OUT)")
        part.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="on top of the run's settings")
        if name == "generative":
            part.add_argument("--inception", default=None, help="folder of the carried parts (stage --kit)")
        if name == "ingest":
            part.add_argument("--n-samples", type=int, default=None, help="evaluate the first N samples")
    stage = sub.add_parser("stage", help="copy the shards (and --kit: the evaluation kit) the GPU machine needs")
    stage.add_argument("source", help="e.g. ../shared/datasets")
    stage.add_argument("dest", nargs="?", default="data/proxy")
    stage.add_argument(
        "--kit", action="store_true", help="also the FID network in two parts and clean-fid/pyautoattack"
    )
    js = sub.add_parser("params-json", help="write params.yaml as params.json (for a machine without PyYAML)")
    js.add_argument("--out", default="params.json")
    args = ap.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except proxy_eval.ReturnedFileError as err:
        raise SystemExit(f"python -m dualat.proxy {args.command}: {err}") from None


def _stage(args: argparse.Namespace) -> None:
    shards = Path(args.dest) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for name in SHARDS:
        shutil.copy2(Path(args.source) / name, shards / name)
    print(f"{len(SHARDS)} shards, {sum((shards / n).stat().st_size for n in SHARDS) / 2**20:.1f} MiB in {shards}")
    if args.kit:
        manifest = proxy_eval.stage_kit(args.dest)
        print(f"FID network {manifest['name']} in {len(manifest['parts'])} parts of <= "
              f"{max(p['bytes'] for p in manifest['parts']) / 2**20:.1f} MiB; clean-fid and pyautoattack in {args.dest}/site")  # fmt: skip


def _params_json(args: argparse.Namespace) -> None:
    Path(args.out).write_text(json.dumps(config.read_params("params.yaml"), indent=1))


def _run(args: argparse.Namespace) -> None:
    cfg = load_proxy_config(args.params, args.overrides, args.data)
    info = run_chain(
        cfg, args.out, args.work, budget_s=args.budget_s, stage1_share=args.stage1_share,
        parallel_ratio=args.parallel_ratio,
    )  # fmt: skip
    problems = check_outputs(args.out)
    heavy = [name for name in HEAVY if name in sys.modules]  # must not be needed on the GPU machine
    if heavy:
        problems.append(f"imported {', '.join(heavy)}")
    print(
        json.dumps({k: info[k] for k in ("seconds", "steps", "stage1_epochs", "final_T", "achieved_tflops")}, indent=1)
    )
    if problems:
        raise SystemExit("outputs over the return limits: " + "; ".join(problems))


def _part(args: argparse.Namespace) -> None:
    """`accuracy` or `generative`: one evaluation part of a run, where the run lies."""
    run_dir, overrides = Path(args.run_dir), list(args.overrides)
    proxy_eval.check_returned(run_dir)
    if args.command == "generative" and args.inception:
        overrides.append(f"sample.fid_weights={proxy_eval.join_inception(args.inception)}")
    cfg = run_config(run_dir, overrides, args.data)
    t0 = time.time()
    if args.command == "accuracy":
        values = proxy_eval.accuracy_part(run_dir, cfg, Path(args.work))
    else:
        values = proxy_eval.generative_part(run_dir, cfg, Path(args.work))
    path = proxy_eval.write_part(run_dir, f"{args.command}.json", values, time.time() - t0, hardware())
    if args.copy_to:
        shutil.copy2(path, Path(args.copy_to) / path.name)
    print(path.read_text())


def _ingest(args: argparse.Namespace) -> None:
    proxy_eval.check_returned(args.run_dir)  # every returned file, before any work
    cfg = run_config(args.run_dir, args.overrides, args.data)
    summary = proxy_eval.ingest(args.run_dir, cfg, args.work, n_samples=args.n_samples)
    print(json.dumps(summary, indent=1, default=str))


COMMANDS = {
    "run": _run,
    "accuracy": _part,
    "generative": _part,
    "ingest": _ingest,
    "stage": _stage,
    "params-json": _params_json,
}


if __name__ == "__main__":
    main()
