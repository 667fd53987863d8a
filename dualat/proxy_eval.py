"""Evaluation of a proxy run (`dualat.proxy.run_chain`): on the GPU machine or on the CPU.

One device session is planned as three calls (docs/gpu_session.md); the two after the chain
evaluate the run where it lies, on the GPU, and return small JSON files:

    accuracy.json     per method: clean, PGD and AutoAttack accuracy with their n, ECE
                      (`accuracy_part`; pyautoattack carried as source, see `stage_kit`)
    generative.json   per method: FID ± bootstrap s.d., KID ± s.d. over subsets, with the
                      protocol (`generative_part`; the FID Inception file carried in two parts
                      and joined by `join_inception`, clean-fid carried as source)

`ingest` then reads the run's folder on this machine, checks every returned file first (one
line naming a bad one), takes those parts where they were returned and computes only what is
missing, and writes results/proxy/proxy.json for the report's proxy section.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualat import artifacts, checkpoint, config, fid_reference
from dualat.config import METHODS, Config
from dualat.metrics import feature_stats, fid_from_stats, inception_path, kid
from dualat.records import atomic_open, sha256_file, write_record

RESULTS = Path("results/proxy")
PARTS = ("accuracy.json", "generative.json")  # what the device's evaluation calls return
# What travels in the evaluation calls (docs/gpu_session.md): the FID network split so that each
# part fits one call's 64 MiB beside the code, and the two packages the GPU machine lacks.
INCEPTION_PARTS = 2
KIT_PACKAGES = ("cleanfid", "pyautoattack")


class ReturnedFileError(ValueError):
    """A file returned by the GPU machine is missing, truncated or of another run; names it."""


# --- the kit carried to the GPU machine -----------------------------------------------------------


def stage_kit(dest: str | Path, inception: str | Path | None = None) -> dict:
    """dest/inception/part0..1 + manifest.json (the FID network in INCEPTION_PARTS pieces with
    their sha256) and dest/site/<package> for KIT_PACKAGES (their Python sources, without
    pyautoattack's 44 MB of example weights). Returns the manifest."""
    dest = Path(dest)
    source = Path(inception) if inception else inception_path()
    folder = dest / "inception"
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    size = -(-len(data) // INCEPTION_PARTS)
    parts = []
    for i in range(INCEPTION_PARTS):
        chunk = data[i * size : (i + 1) * size]
        (folder / f"part{i}").write_bytes(chunk)
        parts.append({"name": f"part{i}", "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"name": source.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for package in KIT_PACKAGES:
        origin = Path(find_spec(package).origin).parent
        target = dest / "site" / package
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "examples", "*.pt", "*.h5"))
    return manifest


def join_inception(folder: str | Path) -> Path:
    """Join folder/part* into folder/<name> as the manifest lists them and check its sha256;
    ReturnedFileError naming the missing or wrong part. Returns the joined file."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    target = folder / manifest["name"]
    if target.exists() and target.stat().st_size == manifest["bytes"] and sha256_file(target) == manifest["sha256"]:
        return target
    chunks = []
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.exists():
            raise ReturnedFileError(f"{path}: missing; carry it in this call (docs/gpu_session.md)")
        chunk = path.read_bytes()
        if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            raise ReturnedFileError(f"{path}: sha256 differs from manifest.json; stage the kit again")
        chunks.append(chunk)
    with atomic_open(target, "wb") as fh:
        fh.write(b"".join(chunks))
    return target


# --- the evaluation parts (GPU machine, or this CPU when a part did not come back) ----------------


def accuracy_part(run_dir: Path, cfg: Config, work: Path, progress: bool = True) -> dict:
    """Per method: clean and PGD accuracy on `data.n_test` test images, AutoAttack on the first
    `evaluate.autoattack_n` (the same images for every method), ECE; each with its n."""
    from dualat.evaluation.classification import accuracy  # lazy: imports pyautoattack and matplotlib

    out = {}
    for method in METHODS:
        state = torch.load(run_dir / f"{method}.pt", map_location="cpu", weights_only=True)
        folder = work / "models" / method
        fp32 = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        checkpoint.save(folder / "model.pt", {"model": fp32})
        artifacts.write_status(folder, None, method=method, source=run_dir.name)
        acc = accuracy(cfg, method, folder / "model.pt", work / method, progress=progress)
        out[method] = {
            "clean_acc": acc["clean_acc"],
            "pgd_acc": acc["pgd_acc"],
            "autoattack_acc": acc["autoattack"]["robust_acc"],
            "n_test": acc["n_test"],
            "n_autoattack": acc["autoattack"]["n"],
            "ece": acc["ece"],
            "attacks": _attack_names(cfg),
        }
    return out


def _attack_names(cfg: Config) -> dict:
    e, p = cfg.evaluate, cfg.evaluate.pgd
    return {
        "pgd_acc": f"L2 PGD ({p.variant}), eps {p.eps}, {p.steps} steps of {p.step_size}",
        "autoattack_acc": f"AutoAttack {e.autoattack_version}, L2, eps {e.autoattack_eps}",
    }


def generative_part(
    run_dir: Path,
    cfg: Config,
    work: Path,
    *,
    features=None,
    n_boot: int = 5,
    n_samples: int | None = None,
    kid_subset: int = 1000,
) -> dict:
    """Per method: FID of the returned samples to the first `sample.fid_ref_n` training images
    (± the s.d. over `n_boot` bootstrap resamples of the samples) and KID (mean ± s.d. over
    subsets), with the protocol. `features` maps images (N, 3, H, W) in [0, 1] to (N, D)
    (default: the FID Inception network of `sample.fid_mode`)."""
    features = features or fid_reference.inception(cfg)
    ref_path = work / "fid_ref" / "stats.npz"
    mu, sigma = fid_reference.reference_stats(cfg, ref_path, features)
    with np.load(ref_path.with_name("features.npz")) as f:
        real = f["feats"].astype(np.float64)
    rng = np.random.default_rng(cfg.sample.seeds[0])
    out = {}
    for method in METHODS:
        with np.load(run_dir / f"samples_{method}.npz") as f:
            x = torch.from_numpy(f["x"][:n_samples]).permute(0, 3, 1, 2).float() / 255
            steps = int(f["steps"])
        feats = features(x)
        boots = [
            fid_from_stats(*feature_stats(feats[rng.integers(0, len(feats), len(feats))]), mu, sigma)
            for _ in range(n_boot)
        ]
        k = kid(feats, real, cfg.sample.kid_subsets, min(kid_subset, len(feats), len(real)), cfg.sample.seeds[0])
        out[method] = {
            "fid": fid_from_stats(*feature_stats(feats), mu, sigma),
            "fid_boot_std": float(np.std(boots, ddof=1)) if n_boot > 1 else None,
            "kid": k["mean"],
            "kid_std": k["std"],
            "n_samples": len(feats),
            "n_reference": len(real),
            "steps": steps,
            "protocol": fid_protocol(cfg, len(feats), len(real), steps),
        }
    return out


def fid_protocol(cfg: Config, n: int, n_ref: int, steps: int) -> str:
    """The FID/KID protocol in one line, e.g. "clean-fid clean, 4000 class-balanced samples vs
    CIFAR-10 train (first 10000), T=33, seed 0"."""
    seeds = ", ".join(str(s) for s in cfg.sample.seeds)
    return (
        f"clean-fid {cfg.sample.fid_mode}, {n} class-balanced samples vs {cfg.data.dataset} train (first {n_ref}),"
        f" T={steps}, step {cfg.sample.step_size}, seed {seeds}"
    )


def write_part(run_dir: Path, name: str, values: dict, seconds: float, hardware: dict) -> Path:
    """run_dir/<name> with the values, where (`hardware`) and how long they were computed."""
    path = run_dir / name
    with atomic_open(path) as fh:
        fh.write(json.dumps({"methods": values, "hardware": hardware, "seconds": seconds}, indent=1))
    return path


# --- checks of what came back, then the ingest ------------------------------------------------------


RUN_KEYS = ("hardware", "seconds", "steps", "final_T", "stage2_cut_short", "forward_gflop", "achieved_tflops", "config")


def check_returned(run_dir: str | Path) -> dict:
    """Every file of a returned run folder, before any work: run.json (complete, of the proxy
    profile), each method's weights (a readable fp16 state dict) and samples (uint8 NHWC with
    labels), and the evaluation parts where present. ReturnedFileError names the first bad file.
    Returns run.json's content."""
    run_dir = Path(run_dir)
    run = _json(run_dir / "run.json")
    missing = [k for k in RUN_KEYS if k not in run]
    if missing:
        raise ReturnedFileError(f"{run_dir / 'run.json'}: no key {missing[0]!r}; not a run.json of dualat.proxy")
    if run["config"].get("profile") != "proxy":
        raise ReturnedFileError(f"{run_dir / 'run.json'}: profile {run['config'].get('profile')!r}, not proxy")
    for method in METHODS:
        _check_weights(run_dir / f"{method}.pt")
        _check_samples(run_dir / f"samples_{method}.npz")
    for name in PARTS:
        if (run_dir / name).exists():
            part = _json(run_dir / name)
            if sorted(part.get("methods", {})) != sorted(METHODS):
                raise ReturnedFileError(f"{run_dir / name}: methods {sorted(part.get('methods', {}))}, not {METHODS}")
    return run


def _json(path: Path) -> dict:
    if not path.exists():
        raise ReturnedFileError(f"{path}: missing from the returned folder")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReturnedFileError(f"{path}: not complete JSON ({err.msg if hasattr(err, 'msg') else err})") from None
    if not isinstance(value, dict):
        raise ReturnedFileError(f"{path}: not a JSON object")
    return value


def _check_weights(path: Path) -> None:
    if not path.exists():
        raise ReturnedFileError(f"{path}: missing from the returned folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ReturnedFileError(f"{path}: not a readable PyTorch file (truncated?): {str(err)[:120]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReturnedFileError(f"{path}: not a state dict of tensors")


def _check_samples(path: Path) -> None:
    if not path.exists():
        raise ReturnedFileError(f"{path}: missing from the returned folder")
    try:
        with np.load(path) as f:
            x, y, _ = f["x"], f["y"], int(f["steps"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise ReturnedFileError(f"{path}: not a complete samples file (x, y, steps): {str(err)[:120]}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(y) != len(x):
        raise ReturnedFileError(f"{path}: x {x.dtype} {x.shape}, y {len(y)}: expected uint8 (N, H, W, 3) and N labels")


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
    """Check the returned folder, take accuracy.json / generative.json where the GPU machine
    computed them and compute the missing parts here; write out_dir/proxy.json and return it."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = check_returned(run_dir)
    t0 = time.time()
    parts: dict[str, Any] = {}
    where = {}
    for name in PARTS:
        path = run_dir / name
        if path.exists() and not (name == "generative.json" and n_samples is not None):
            parts[name], where[name] = json.loads(path.read_text())["methods"], "GPU machine"
    if "accuracy.json" not in parts:
        parts["accuracy.json"], where["accuracy.json"] = accuracy_part(run_dir, cfg, out_dir, progress), "this CPU"
    if "generative.json" not in parts:
        gen = generative_part(
            run_dir, cfg, out_dir, features=features, n_boot=n_boot, n_samples=n_samples, kid_subset=kid_subset
        )
        parts["generative.json"], where["generative.json"] = gen, "this CPU"
    metrics = {m: parts["accuracy.json"][m] | parts["generative.json"][m] for m in METHODS}
    keys = ("hardware", "seconds", "steps", "final_T", "stage2_cut_short", "forward_gflop", "achieved_tflops")
    planned = ("stage1_epochs", "stage2_steps_planned")  # what the run was sized for (runs of before: absent)
    summary = {
        "methods": metrics,
        "run": {k: run[k] for k in keys} | {k: run[k] for k in planned if k in run},
        "evaluated_on": where,
    }
    write_record(
        out_dir / "proxy.json", summary, config=config.to_dict(cfg), checkpoint=None, wall_seconds=time.time() - t0
    )
    return summary
