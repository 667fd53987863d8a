"""Speed of one stage-2 iteration (`dualat.train.stage2_step`) under the settings that change it.

usage: python scripts/bench_stage2.py [--depth 34 --width 10 --batch 128 --T 0 20 45 --device cuda]
       python scripts/bench_stage2.py --depth 16 --width 4 --batch 16 --T 5 --device cpu --threads 2
       python scripts/bench_stage2.py --compare-bf16 300     # bf16 vs fp32 trajectories, CPU-sized

Random weights and random images (no data needed); the stage-2 settings are the paper profile's
(K = 10 attack steps, eta = 0.1) with the variant's fused / amp_bf16 / channels_last. Prints, per
variant and T: ms per iteration, images/s (B per iteration), achieved TFLOP/s of the counted
model FLOPs F * B * (2T + 2K + 12) (F: one forward of one image by torch.utils.flop_counter) and
the share of the device's dense peak (bf16 peak for bf16 rows, TF32 for fp32 rows). Asserts nothing.

--compare-bf16 N trains a WRN-10-1 for N stage-2 steps from the same start and batches with
amp_bf16 off and on (real CIFAR-10 / Tiny-ImageNet shards when $DUALAT_DATA or ../shared/datasets
holds them, else random images) and prints loss, L_BCE, AUC and the T curriculum side by side.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualat import config  # noqa: E402
from dualat.curriculum import Curriculum  # noqa: E402
from dualat.data import BatchStream, DataMissingError, generative_transform, get_dataset  # noqa: E402
from dualat.models import WideResNet  # noqa: E402
from dualat.train import freeze_bn, make_optimizer, stage2_step  # noqa: E402

# Dense peak TFLOP/s by device name (bf16, tf32), vendor data sheets (SXM parts).
PEAK_TFLOPS = {"H100": (989.0, 494.7), "H200": (989.0, 494.7), "A100": (312.0, 156.0), "L40S": (362.0, 183.0)}
# (name, fused, amp_bf16, channels_last, compile mode or None)
VARIANTS = [
    ("fp32 unfused", False, False, False, None),
    ("fp32 fused", True, False, False, None),
    ("fp32 fused channels_last", True, False, True, None),
    ("bf16 fused", True, True, False, None),
    ("bf16 fused channels_last", True, True, True, None),
    ("bf16 fused cl compile", True, True, True, "default"),
    ("bf16 fused cl compile+cudagraphs", True, True, True, "reduce-overhead"),
]


def peak(device: torch.device) -> tuple[float, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def forward_flops(model: torch.nn.Module, device: torch.device) -> float:
    """FLOPs of one forward pass of one 32x32 image (torch.utils.flop_counter)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, 32, 32, device=device))
    return float(counter.get_total_flops())


def stage2_cfg(**changes) -> config.Stage2Config:
    return dataclasses.replace(config.load(ROOT / "params.yaml", dataset="cifar10", profile="paper").stage2, **changes)


def batch(B: int, device: torch.device, channels_last: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.rand(B, 3, 32, 32, generator=g) for _ in range(3)]
    ys = [torch.randint(0, 10, (B,), generator=g) for _ in range(2)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, x_hat, x0 = (t.to(device).contiguous(memory_format=fmt) for t in xs)
    return x, ys[0].to(device), x_hat, ys[1].to(device), x0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def skip_reason(device: torch.device, mode: str | None, args) -> str | None:
    if mode is None:
        return None
    if mode == "reduce-overhead" and device.type != "cuda":
        return "CUDA graphs need a GPU"
    if device.type == "cpu" and not args.compile_cpu:
        return "torch.compile on 2 CPU threads builds kernels for minutes; --compile-cpu to try"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "torch.compile (inductor) needs a C compiler"
    return None


def time_variant(base: torch.nn.Module, variant, T: int, args, device: torch.device) -> float:
    """Seconds per stage-2 iteration (median of args.iters after warm-up)."""
    name, fused, bf16, cl, mode = variant
    model = freeze_bn(copy.deepcopy(base)).train()
    if cl:
        model.to(memory_format=torch.channels_last)
    cfg = stage2_cfg(batch_size=args.batch, fused=fused, amp_bf16=bf16, channels_last=cl)
    opt = make_optimizer(model, cfg.optim)
    net = torch.compile(model, mode=mode) if mode else model
    data = batch(args.batch, device, cl)
    times = []
    for i in range(args.warmup + args.iters):
        sync(device)
        t0 = time.perf_counter()
        stage2_step(net, opt, cfg, data, T)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench(args) -> None:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = WideResNet(args.depth, args.width, 10).to(device)
    F = forward_flops(base, device)
    K = stage2_cfg().attack.steps
    pk = peak(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# WRN-{args.depth}-{args.width}, F = {F / 1e9:.3f} GFLOP per image forward, B = {args.batch}, K = {K}")
    print(f"# {where}, torch {torch.__version__}; FLOPs per iteration = F * B * (2T + 2K + 12)")
    head = f"| {'setting':34s} | {'T':>3s} | {'ms/iter':>9s} | {'images/s':>8s} | {'TFLOP/s':>8s} | {'% of peak':>9s} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for variant in VARIANTS:
        if args.variants and not any(v in variant[0] for v in args.variants):
            continue
        reason = skip_reason(device, variant[4], args)
        if reason:
            print(f"| {variant[0]:34s} | {'':>3s} | skipped: {reason} |")
            continue
        for T in args.T:
            try:
                s = time_variant(base, variant, T, args, device)
            except Exception as err:  # a variant the device or torch build does not support
                print(f"| {variant[0]:34s} | {T:3d} | failed: {type(err).__name__}: {str(err).splitlines()[0][:80]} |")
                break
            tflops = F * args.batch * (2 * T + 2 * K + 12) / s / 1e12
            share = f"{100 * tflops / pk[0 if variant[2] else 1]:.1f}" if pk else "unknown"
            print(
                f"| {variant[0]:34s} | {T:3d} | {1e3 * s:9.1f} | {args.batch / s:8.1f} | {tflops:8.3f} | {share:>9s} |"
            )
            sys.stdout.flush()


def compare_bf16(args) -> None:
    """Stage-2 trajectories of fp32 and bf16 autocast from the same weights and batches."""
    B, steps = args.batch, args.compare_bf16
    root = os.environ.get("DUALAT_DATA") or str(ROOT.parent / "shared" / "datasets")
    aug = generative_transform("cifar10", "crop_flip")
    try:
        cls, ood = (
            get_dataset("cifar10", "train", root, aug, n=2000),
            get_dataset("tinyimagenet32", "train", root, aug, n=2000),
        )
        source = f"CIFAR-10 / Tiny-ImageNet shards in {root}"
    except DataMissingError:
        cls = TensorDataset(torch.rand(512, 3, 32, 32), torch.randint(0, 10, (512,)))
        ood = TensorDataset(torch.rand(512, 3, 32, 32), torch.zeros(512, dtype=torch.long))
        source = "random images (no shards found)"
    torch.manual_seed(0)
    base = WideResNet(10, 1, 10)
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):  # same weights, same batches
        cfg = stage2_cfg(batch_size=B, amp_bf16=bf16, channels_last=False, fused=True)
        cfg = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, auc_window_images=4 * B))
        model = freeze_bn(copy.deepcopy(base)).train()
        runs[name] = {
            "cfg": cfg,
            "model": model,
            "opt": make_optimizer(model, dataclasses.replace(cfg.optim, lr=0.01)),
            "cur": Curriculum(cfg.sampler.T_max, "auc", cfg.sampler.auc_threshold, cfg.sampler.auc_window_images, B),
            "streams": (BatchStream(cls, B, 0), BatchStream(cls, B, 1), BatchStream(ood, B, 2)),
            "rows": [],
            "seconds": 0.0,
        }
    print(f"# WRN-10-1 (random init), B = {B}, lr 0.01, AUC window {4 * B} images, {source}")
    print("| steps | loss fp32 | loss bf16 | L_BCE fp32 | L_BCE bf16 | AUC fp32 | AUC bf16 | T fp32 | T bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    chunk = max(1, steps // 10)
    for i in range(steps):  # interleaved, so that a cut-short run still compares both
        for r in runs.values():
            c, g, o = r["streams"]
            (x, y), (x_hat, y_hat), (x0, _) = next(c), next(g), next(o)
            T, t0 = r["cur"].T, time.time()
            loss, stats = stage2_step(r["model"], r["opt"], r["cfg"], (x, y, x_hat, y_hat, x0), T)
            r["cur"].update(stats["auc"], stats["bce"])
            r["seconds"] += time.time() - t0
            r["rows"].append((float(loss.detach()), float(stats["bce"]), float(stats["auc"]), T))
        if (i + 1) % chunk == 0 or i + 1 == steps:
            lo = (i // chunk) * chunk
            a, b = (runs[k]["rows"][lo : i + 1] for k in ("fp32", "bf16"))
            m = [sum(r[k] for r in rs) / len(rs) for rs in (a, b) for k in range(3)]
            print(
                f"| {lo}-{i} | {m[0]:.4f} | {m[3]:.4f} | {m[1]:.4f} | {m[4]:.4f} | {m[2]:.3f} | {m[5]:.3f} |"
                f" {a[-1][3]} | {b[-1][3]} |",
                flush=True,
            )
    a, b = runs["fp32"]["rows"], runs["bf16"]["rows"]
    raise_at = {k: [i for i in range(1, steps) if r["rows"][i][3] > r["rows"][i - 1][3]] for k, r in runs.items()}
    print(f"# T raised at steps: fp32 {raise_at['fp32']}, bf16 {raise_at['bf16']}")
    print(
        f"# first-step loss: fp32 {a[0][0]:.6f}, bf16 {b[0][0]:.6f} (relative {abs(a[0][0] - b[0][0]) / a[0][0]:.2e})"
    )
    print(f"# seconds: fp32 {runs['fp32']['seconds']:.0f}, bf16 {runs['bf16']['seconds']:.0f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=34)
    ap.add_argument("--width", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--T", type=int, nargs="+", default=[0, 20, 45])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first (compile, cuDNN autotune)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--variants", nargs="*", help="only the settings whose name contains one of these")
    ap.add_argument("--compile-cpu", action="store_true", help="also try torch.compile on the CPU")
    ap.add_argument("--compare-bf16", type=int, default=0, metavar="STEPS", help="bf16 vs fp32 trajectories")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    compare_bf16(args) if args.compare_bf16 else bench(args)


if __name__ == "__main__":
    main()
