"""The pipeline's data and training stages, as the notebooks call them: `prepare` checks the data
and caches the FID reference; `train` runs stage 1 (standard AT, RATIO) or stage 2 (Dual-AT,
Algorithm 1) into a model folder. Each writes a status file (`artifacts.write_status`) that says
`not computed: <reason>` to the stages after it when a data source is missing.

With `compute` asking for several processes, `train` launches torchrun itself (`dualat.launch`)
and each process trains on its slice of every global batch (`distributed.part`); the folder holds
the same files as after one process (docs/gpus.md).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from dualat import artifacts, datasets, distributed, fid_reference, launch, model_io, runs
from dualat.config import Config, to_dict
from dualat.data import BatchStream, classification_transform, derive_seed, generative_transform, stage2_streams
from dualat.records import sha256_file
from dualat.train import train_stage1, train_stage2


def prepare(cfg: Config, out_dir: str | Path) -> dict:
    """Check every data source of the dataset (out_dir/status.json, read by the training stages)
    and cache the FID reference statistics (out_dir/fid_ref/, read by the evaluation stages).
    Each status file changes only when its content does, so DVC skips what does not depend on it."""
    out_dir = Path(out_dir)
    reason = datasets.missing_data(cfg)
    artifacts.keep_computed(out_dir, reason)  # a briefly missing data folder fails, keeping what was prepared
    info = {}
    if reason is None:
        info = {
            "n_train": len(datasets.train_set(cfg)),
            "n_test": len(datasets.test_set(cfg)),
            "n_ood": len(datasets.ood_set(cfg)),
        }
    info["data_sha256"] = datasets.data_fingerprint(cfg)  # a changed data file reruns the stages after this one
    info["provenance"] = datasets.data_provenance(cfg)  # e.g. lossless torchvision CIFAR or the JPEG shards
    status = artifacts.write_status(out_dir, reason, **info)
    missing = fid_reference.fid_weights(cfg).get("missing")
    if reason is None and missing is None:
        mu, _ = fid_reference.reference_stats(cfg, out_dir / "fid_ref" / "stats.npz")
        artifacts.write_status(out_dir / "fid_ref", None, n_images=cfg.sample.fid_ref_n or info["n_train"], dim=len(mu))
        for mode in fid_reference.fid_modes(cfg)[1:]:  # sample.fid_second_mode, when its weights are here
            other = fid_reference.with_mode(cfg, mode)
            if fid_reference.fid_weights(other).get("missing") is None:
                fid_reference.reference_stats(
                    other, fid_reference.mode_ref_path(cfg, out_dir / "fid_ref" / "stats.npz", mode)
                )
    else:
        artifacts.write_status(out_dir / "fid_ref", reason if reason is not None else missing)
    return status


def train(
    cfg: Config,
    method: str,
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    ref_path: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `method` (standard_at | ratio | dualat) into out_dir and return its status; dualat
    starts from the stage-1 checkpoint `init` and, with the FID reference `ref_path`, selects
    best_fid.pt by FID. `stop_after` ends training after that many steps (tests, the proxy).
    With `compute` asking for more than one process this call runs torchrun and returns rank 0's
    status. A second process training into the same folder is refused (`runs.locked`; the
    processes torchrun starts share the lock)."""
    out_dir = Path(out_dir)
    if method not in model_io.METHOD_STAGE:
        raise ValueError(f"method must be one of {', '.join(model_io.METHOD_STAGE)}, got {method!r}")
    with runs.locked(out_dir) if distributed.is_main() else contextlib.nullcontext():  # rank 0 holds it for all
        if launch.wanted(cfg):
            paths = {"out_dir": str(out_dir), "init": _str(init), "ref_path": _str(ref_path)}
            return launch.run("train", cfg, out_dir, method=method, progress=progress, stop_after=stop_after, **paths)
        return _train(cfg, method, out_dir, init, ref_path, progress, stop_after)


def _train(
    cfg: Config,
    method: str,
    out_dir: Path,
    init: str | Path | None,
    ref_path: str | Path | None,
    progress: bool,
    stop_after: int | None,
) -> dict:
    """`train`, with out_dir locked."""
    reason = datasets.missing_data(cfg) or (artifacts.read_status(Path(init).parent) if init is not None else None)
    if reason is not None:
        artifacts.keep_computed(out_dir, reason)  # a finished run is kept when its data is briefly missing
        return artifacts.write_status(out_dir, reason, method=method)
    torch.manual_seed(cfg.stage1.seed)  # the initialisation of a new model
    # the first stage*.eval_n test images (0 = all) for the PGD accuracy that selects checkpoints
    eval_n = cfg.stage2.eval_n if method == "dualat" else cfg.stage1.eval_n
    test_xy = datasets.stack(datasets.test_set(cfg), eval_n)
    key = runs.resume_key(
        to_dict(cfg),
        runs.RESUME_KEYS[method],
        data=datasets.data_fingerprint(cfg),
        init=sha256_file(init) if init else None,
    )
    config = {"profile": cfg.profile, "method": method} | to_dict(cfg)  # saved in every checkpoint
    loop = {"config": config, "key": key, "progress": progress, "stop_after": stop_after}  # train_stage1/2 keywords
    if method == "dualat":
        result = _train_stage2(cfg, out_dir, test_xy, init, ref_path, loop)
    else:
        result = _train_stage1(cfg, method, out_dir, test_xy, loop)
    return artifacts.write_status(
        out_dir,
        None,
        method=method,
        seconds=result["seconds"],  # training time over every resume
        steps=result["steps"],
        best=result["best"],
        T=result.get("T"),
        data_provenance=datasets.data_provenance(cfg),  # train, test and p_ood (data.ood) as read
    )


def _train_stage1(cfg: Config, method: str, out_dir: Path, test_xy: tuple, loop: dict) -> dict:
    """Stage 1 from a new model: standard AT (L_AT-CE, Eq. 11) or RATIO (Eq. 13, with the OOD
    stream of p_ood under `ratio.ood_augmentation`); `loop` holds train_stage1's remaining keywords."""
    dataset, stage1 = cfg.data.dataset, cfg.stage1
    model = model_io.new_model(cfg)
    train = datasets.train_set(cfg, classification_transform(dataset))
    weights = getattr(train, "sample_weights", None) if cfg.data.rin_balance else None  # RIN class balance
    part = distributed.part()  # this process's slice of each global batch
    stream = BatchStream(train, stage1.batch_size, stage1.seed, workers=cfg.data.workers, weights=weights, part=part)
    ood_stream = None
    if method == "ratio":
        augmentation = (
            classification_transform(dataset)
            if cfg.ratio.ood_augmentation == "classification"
            else generative_transform(dataset)
        )
        ood = datasets.ood_set(cfg, augmentation)
        ood_stream = BatchStream(
            ood, stage1.batch_size, derive_seed(stage1.seed, 1), workers=cfg.data.workers, part=part
        )
    return train_stage1(
        model, stage1, stream, len(stream.sampler), test_xy, out_dir,
        ratio=cfg.ratio if method == "ratio" else None, ood_stream=ood_stream, **loop,
    )  # fmt: skip


def _train_stage2(
    cfg: Config, out_dir: Path, test_xy: tuple, init: str | Path | None, ref_path: str | Path | None, loop: dict
) -> dict:
    """Stage 2 (Dual-AT, Eq. 12) from the stage-1 weights `init` (its EMA or plain weights, as
    `stage2.init` says); FID selection when `ref_path` is given and `stage2.eval_fid_samples` > 0;
    `loop` holds train_stage2's remaining keywords."""
    if init is None:
        raise ValueError("dualat training needs init=<stage-1 checkpoint>")
    dataset, stage2 = cfg.data.dataset, cfg.stage2
    model = model_io.load_model(cfg, init, "ema" if stage2.init == "ema" else "plain").train()
    augmentation = stage2.sampler.augmentation
    streams = stage2_streams(
        datasets.train_set(cfg, classification_transform(dataset)),
        datasets.train_set(cfg, generative_transform(dataset, augmentation)),
        datasets.ood_set(cfg, generative_transform(dataset, augmentation)),
        stage2.batch_size, stage2.seed, cfg.data.workers, part=distributed.part(),
    )  # fmt: skip
    use_fid = ref_path is not None and stage2.eval_fid_samples > 0
    # the reference statistics are cached by rank 0 before the other processes read them
    fid_fn = distributed.main_first(lambda: fid_reference.sample_fid_fn(cfg, ref_path)) if use_fid else None
    return train_stage2(
        model, stage2, streams.cls, streams.gen, streams.ood, test_xy, out_dir, fid_fn=fid_fn, **loop
    )  # fmt: skip


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)
