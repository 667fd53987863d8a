"""What a pipeline stage (a notebook) calls: build data, models and streams from a `Config`,
run a training stage, and say `not computed: <reason>` when a data source is missing.

Layout of artifacts (stable paths, no hyperparameters in names):
    data/prepared/<dataset>/   status.json, fid_ref/stats.npz (Inception statistics of the training set)
    models/<dataset>/<method>/ best*.pt, last.pt, final.pt, history.json, status.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualat import distributed, runs
from dualat.config import Config, to_dict
from dualat.records import NotComputed, atomic_open, dumps_strict, sha256_file

METHOD_STAGE = {"standard_at": "stage1", "ratio": "stage1", "dualat": "stage2"}
# The reported model of each method: stage 1 / RATIO by best robust accuracy, Dual-AT by best FID.
SELECTED = {"standard_at": "best.pt", "ratio": "best.pt", "dualat": "best_fid.pt"}


def repo_root(start: str | Path = ".") -> Path:
    """The folder holding params.yaml, from `start` upwards (notebooks run from notebooks/)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise FileNotFoundError(f"no params.yaml in {start} or above; open the notebook inside the dualat repository")


def model_dir(dataset: str, method: str) -> Path:
    return Path("models") / dataset / method


def selected_model(cfg: Config, method: str) -> tuple[Path, str]:
    """The checkpoint evaluated for `method` and why that one (recorded with every evaluation):
    the file of `evaluate.checkpoints.<method>` when set (a released or one's own checkpoint,
    evaluated instead of the trained model), else `trained_model`."""
    external = getattr(cfg.evaluate.checkpoints, method, "") if method in METHOD_STAGE else ""
    if external:
        return Path(external), f"external checkpoint {external} (evaluate.checkpoints.{method})"
    return trained_model(cfg, method)


def trained_model(cfg: Config, method: str) -> tuple[Path, str]:
    """The checkpoint training selected for `method` and why (stage 2 starts from standard_at's).

    standard_at / ratio: best.pt (best PGD robust test accuracy). dualat: best_fid.pt (best FID
    during training), or final.pt when `stage2.eval_fid_samples` is 0 (no FID, so no selection).
    """
    folder = model_dir(cfg.data.dataset, method)
    if method == "dualat" and cfg.stage2.eval_fid_samples == 0:
        return folder / "final.pt", "final.pt: stage2.eval_fid_samples is 0, so no best-FID checkpoint exists"
    why = "best FID during training" if method == "dualat" else "best PGD robust accuracy during training"
    return folder / SELECTED[method], f"{SELECTED[method]}: {why}"


def data_fingerprint(cfg: Config) -> dict[str, str]:
    """sha256 of the file list (names and sizes) of the training set and of p_ood."""
    from dualat.data.fingerprint import fingerprint

    return fingerprint([cfg.data.dataset, cfg.data.ood], cfg.data_root)["sha256"]


def device() -> torch.device:
    """The current GPU: the first visible one, under torchrun this process's (`distributed.init_from_env`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def root(cfg: Config) -> Path:
    from dualat.data import data_root

    return data_root(cfg.data_root)


# --- data -----------------------------------------------------------------------------------------


def checked(cfg: Config, ds, name: str, classes: bool = True):
    """ds after data.check_dataset against data.image_size (and data.num_classes if `classes`)."""
    from dualat.data import check_dataset

    num_classes = cfg.data.num_classes if classes else None
    return check_dataset(ds, name=name, image_size=cfg.data.image_size, num_classes=num_classes)


def train_set(cfg: Config, transform=None):
    from dualat.data import get_dataset

    kw = {"balance": cfg.data.rin_balance} if cfg.data.dataset == "rin" else {}
    ds = get_dataset(cfg.data.dataset, "train", root(cfg), transform, n=cfg.data.n_train, n_key="data.n_train", **kw)
    return checked(cfg, ds, cfg.data.dataset)


def test_set(cfg: Config, n: int | None = None):
    from dualat.data import get_dataset, test_transform

    n_key = "data.n_test" if n is None else "n"
    n = cfg.data.n_test if n is None else n
    ds = get_dataset(
        cfg.data.dataset,
        "test" if cfg.data.dataset != "rin" else "val",
        root(cfg),
        test_transform(cfg.data.dataset),
        n=n,
        n_key=n_key,
    )
    return checked(cfg, ds, cfg.data.dataset)


def ood_set(cfg: Config, transform=None):
    """p_ood, the auxiliary OOD source of stage 2, RATIO and the sample seeds."""
    from dualat.data import get_dataset

    kw, note = _ood_exclusion(cfg)
    ds = get_dataset(cfg.data.ood, "train", root(cfg), transform, n=cfg.data.n_ood, n_key="data.n_ood", **kw)
    if note:
        ds.provenance += note
    return checked(cfg, ds, cfg.data.ood, classes=False)


def ood_exclude_file(cfg: Config) -> Path | None:
    """The file of `data.ood_exclude` (a relative path lies under the data root); None for ""."""
    if not cfg.data.ood_exclude:
        return None
    path = Path(cfg.data.ood_exclude)
    return path if path.is_absolute() else root(cfg) / path


def _ood_exclusion(cfg: Config) -> tuple[dict, str]:
    """get_dataset keywords for p_ood's exclusion list (80M Tiny Images only) and a provenance
    note when the configured list is absent (then nothing is excluded, with a warning)."""
    file = ood_exclude_file(cfg)
    if cfg.data.ood != "tiny_images" or file is None:
        return {}, ""
    if file.is_file():
        return {"exclude_files": [file]}, ""
    import warnings

    note = f"; data.ood_exclude {file} not found, so no CIFAR near-duplicates were excluded"
    warnings.warn(note[2:], stacklevel=3)
    return {}, note


def data_provenance(cfg: Config) -> dict[str, str]:
    """Where the training set, the test set and p_ood are read from, and whether losslessly
    (`data.describe`; e.g. the lossless torchvision CIFAR folder or the JPEG offline shards)."""
    from dualat.data import describe

    d, base = cfg.data, root(cfg)
    kw, note = _ood_exclusion(cfg)
    return {
        "train": describe(d.dataset, "train", base),
        "test": describe(d.dataset, "test" if d.dataset != "rin" else "val", base),
        "p_ood": describe(d.ood, "train", base, **kw) + note,
    }


def stack_range(dataset, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items start..stop-1 of a dataset as tensors (B, C, H, W), (B,)."""
    items = [dataset[i] for i in range(start, stop)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def stack(dataset, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n items (0 = all) as tensors (N, C, H, W), (N,)."""
    return stack_range(dataset, 0, len(dataset) if n == 0 else min(n, len(dataset)))


def real_features(
    dataset, n: int, features, cache: str | Path | None = None, key: dict | None = None
) -> tuple[Any, Any]:
    """Inception features (M, D) and labels (M,) of the first n items (0 = all) of `dataset`,
    computed batch by batch and cached in the .npz `cache` under `key` (recomputed when the
    cached file was made from other images: another key or count)."""
    import numpy as np

    n = len(dataset) if n == 0 else min(n, len(dataset))
    stamp = json.dumps({"n": n} | (key or {}), sort_keys=True)
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as f:
            if "key" in f and str(f["key"]) == stamp:
                return f["feats"].astype(np.float64), f["labels"]
    feats, labels = [], []
    for start in range(0, n, 256):
        x, y = stack_range(dataset, start, min(start + 256, n))
        feats.append(features(x))
        labels.append(y.numpy())
    feats_all, labels_all = np.concatenate(feats), np.concatenate(labels)
    if cache is not None:
        with atomic_open(cache, "wb") as f:
            # Inception computes in float32, so float32 storage loses nothing and halves the file.
            np.savez(f, feats=feats_all.astype(np.float32), labels=labels_all, key=np.array(stamp))
    return feats_all, labels_all


# Profiles that cover only some datasets; the others run through every stage as "not computed".
PROFILE_DATASETS = {"proxy": ("cifar10",)}


def profile_scope(cfg: Config) -> NotComputed | None:
    """NotComputed when `cfg.profile` does not cover `cfg.data.dataset` (proxy: CIFAR-10 only)."""
    covered = PROFILE_DATASETS.get(cfg.profile)
    if covered is None or cfg.data.dataset in covered:
        return None
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "rin": "RestrictedImageNet"}
    return NotComputed(f"{cfg.profile} profile is {' and '.join(names[d] for d in covered)} only")


def missing_data(cfg: Config) -> NotComputed | None:
    """NotComputed naming the missing source when training data, test data or p_ood is absent,
    or when the profile does not cover the dataset (`profile_scope`)."""
    from dualat.data import DataMissingError

    scope = profile_scope(cfg)
    if scope is not None:
        return scope
    try:
        train_set(cfg), test_set(cfg), ood_set(cfg)
    except DataMissingError as e:
        return NotComputed(" ".join(str(e).split()) + " (README: Data)")
    return None


# --- status files: how a stage says "not computed" to the stages after it -----------------------


def write_status(out_dir: str | Path, reason: NotComputed | None, **info: Any) -> dict:
    status = {"computed": reason is None, "reason": None if reason is None else reason.reason} | info
    if distributed.is_main():
        with atomic_open(Path(out_dir) / "status.json", "w") as f:
            f.write(dumps_strict(status))
    distributed.barrier()  # under torchrun rank 0 writes; the others go on once it is there
    return status


def read_status(out_dir: str | Path) -> NotComputed | None:
    """None when the stage that wrote out_dir computed its outputs, else its NotComputed."""
    path = Path(out_dir) / "status.json"
    if not path.exists():
        return NotComputed(f"{path} is missing; run its stage first")
    status = json.loads(path.read_text())
    return None if status["computed"] else NotComputed(status["reason"])


# --- models ---------------------------------------------------------------------------------------


def new_model(cfg: Config) -> nn.Module:
    from dualat.models import build_model

    return build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.depth, cfg.model.widen_factor).to(device())


def load_model(cfg: Config, path: str | Path, weights: str = "selected") -> nn.Module:
    """A model in eval mode from a checkpoint of this project or any state dict.

    `weights`: "selected" = the weights the run selected (EMA weights where the run used EMA),
    "ema" (refused when the file holds none), or "plain" (the trained, non-EMA weights).
    Project checkpoints: best*.pt / final.pt hold "model" (selected) and "plain"; last.pt holds
    "model" (plain) and "ema". Other files: a state dict, or one wrapped as {"state_dict": ...}
    or {"model": ...}, with the prefixes of `models.strip_prefixes` removed; then only "selected"
    or "plain" make sense and both mean the file's weights.
    """
    from dualat import checkpoint

    if weights not in ("selected", "ema", "plain"):
        raise ValueError(f"weights must be selected, ema or plain, got {weights!r}")
    state = checkpoint.load(path)
    state_dict = _weights_of(state, weights, Path(path))
    model = new_model(cfg)
    try:
        from dualat.models import load_released

        load_released(model, state_dict)
    except RuntimeError:
        saved = _described(state, state_dict)
        ours = f"{cfg.model.arch}-{cfg.model.depth}-{cfg.model.widen_factor}, {cfg.data.num_classes} classes"
        raise ValueError(
            f"{path} holds a {saved} model; params.yaml ({cfg.profile}.{cfg.data.dataset}) wants {ours}"
        ) from None
    return model.eval()


def _weights_of(state: dict, weights: str, path: Path) -> dict:
    """The state dict asked for by `weights` inside a loaded checkpoint (see `load_model`)."""
    if "optimizer" in state and "ema" in state:  # a resumable last.pt of this project
        uses_ema = state["ema"] is not None
        if weights == "ema" or (weights == "selected" and uses_ema):
            if not uses_ema:
                raise ValueError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
            return state["ema"]["module"]
        return state["model"]
    if "plain" in state and "model" in state:  # best*.pt / final.pt of this project
        if weights == "ema" and not state.get("ema", True):
            raise ValueError(f"{path} holds no EMA weights (its run had EMA off); ask for weights='plain'")
        return state["plain"] if weights == "plain" else state["model"]
    if weights == "ema":
        raise ValueError(f"{path} is a plain state dict; it has no separate EMA weights")
    for wrapper in ("state_dict", "model"):  # {"state_dict": {...}} and similar wrappers
        if isinstance(state.get(wrapper), dict):
            return state[wrapper]
    return state


def _described(state: dict, state_dict: dict) -> str:
    """The architecture a checkpoint was saved with: its saved config, else read off the shapes."""
    saved = state.get("config") if isinstance(state.get("config"), dict) else None
    if saved and "model" in saved and "data" in saved:
        m = saved["model"]
        return f"{m['arch']}-{m['depth']}-{m['widen_factor']}, {saved['data']['num_classes']} classes"
    fc = next((v for k, v in state_dict.items() if k.endswith("fc.weight")), None)
    classes = f"{fc.shape[0]} classes" if fc is not None else "unknown class count"
    return f"{len(state_dict)}-tensor ({classes}) state-dict"


# --- FID of a model's samples -----------------------------------------------------------------------


def inception(cfg: Config | None = None):
    """The FID Inception network of `cfg.sample.fid_mode` (weights `sample.fid_weights`, else the
    mode's default lookup, see metrics.fid_weights) on the pipeline's device; without cfg
    clean-fid's "clean" mode. FileNotFoundError naming the file when the weights are missing."""
    from dualat.metrics import InceptionFeatures

    if cfg is None:
        return InceptionFeatures(device=device())
    return InceptionFeatures(cfg.sample.fid_weights or None, device=device(), mode=cfg.sample.fid_mode)


def fid_weights(cfg: Config) -> dict:
    """The FID network's weights: {"path", "sha256"}, or {"path": None, "missing": reason}."""
    from dualat.metrics import fid_weights as find

    found = find(cfg.sample.fid_mode, cfg.sample.fid_weights or None)
    if isinstance(found, NotComputed):
        return {"path": None, "sha256": None, "missing": found}
    return {"path": str(found), "sha256": sha256_file(found)}  # hashed once per process (~90 MB)


def fid_ref_key(cfg: Config) -> dict:
    """What the FID reference statistics are computed from; a cached file of another key is
    recomputed, never reused (e.g. the quick profile's 500-image reference in a paper run, or
    features of another FID mode or network)."""
    weights = fid_weights(cfg)
    return {
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "split": "train",
        "n": cfg.sample.fid_ref_n,
        "data": data_fingerprint(cfg)[cfg.data.dataset],
        "mode": cfg.sample.fid_mode,  # clean-fid's preprocessing and network (metrics.generative)
        "weights": weights["sha256"] or str(weights["missing"]),
    }


def reference_stats(cfg: Config, path: str | Path, features=None) -> tuple[Any, Any]:
    """Inception statistics of the first `sample.fid_ref_n` training images, cached at `path`
    under `fid_ref_key(cfg)`; their features and labels are cached beside it (features.npz,
    reused by the counterfactuals and by KID). FileNotFoundError when the mode's weights are
    missing and nothing is cached."""
    from dualat.metrics import cached_stats

    return cached_stats(path, lambda: reference_features(cfg, path, features), fid_ref_key(cfg))


def reference_features(cfg: Config, path: str | Path, features=None):
    """Features (M, 2048) of the FID reference images (features.npz beside `path`, same key)."""
    from dualat.data import test_transform

    train = train_set(cfg, test_transform(cfg.data.dataset))
    cache = Path(path).with_name("features.npz")
    return real_features(train, cfg.sample.fid_ref_n, features or inception(cfg), cache, fid_ref_key(cfg))[0]


def real_features_path(dataset: str) -> Path:
    """Features and labels of the FID reference images (written by the prepare stage)."""
    return fid_ref_path(dataset).with_name("features.npz")


def sample_fid_fn(cfg: Config, ref_path: str | Path):
    """fid(model, n): FID of n class-balanced conditional samples (Table 8's T for Dual-AT) from
    the held-out selection seeds (`generate.seed_split`), disjoint from the reported samples'."""
    from dualat.data import test_transform
    from dualat.generate import balanced_labels, generate, images_at, seed_split, selection_size

    features = inception(cfg)
    reference_stats(cfg, ref_path, features)
    seeds_all = ood_set(cfg, test_transform(cfg.data.dataset))
    selection, _ = seed_split(len(seeds_all), selection_size(cfg), cfg.sample.selection_seed)

    def fid(model: nn.Module, n: int) -> float:
        from dualat.metrics import fid_to_reference

        x = generate(
            model,
            images_at(seeds_all, selection[:n]),
            cfg.sample.steps.dualat,
            cfg.sample.step_size,
            balanced_labels(n, cfg.data.num_classes),
            cfg.sample.batch_size,
        )
        return fid_to_reference(features(x), ref_path)

    return fid


# --- stages ---------------------------------------------------------------------------------------


def prepared_dir(dataset: str) -> Path:
    return Path("data/prepared") / dataset


def fid_ref_path(dataset: str) -> Path:
    """The cached Inception statistics of the training set (FID reference, A.2)."""
    return prepared_dir(dataset) / "fid_ref" / "stats.npz"


def prepare(cfg: Config, out_dir: str | Path) -> dict:
    """Check every data source of the dataset (out_dir/status.json, read by the training stages)
    and cache the FID reference statistics (out_dir/fid_ref/, read by the evaluation stages).
    Each status file changes only when its content does, so DVC skips what does not depend on it."""
    out_dir = Path(out_dir)
    reason = missing_data(cfg)
    info = {} if reason else {"n_train": len(train_set(cfg)), "n_test": len(test_set(cfg)), "n_ood": len(ood_set(cfg))}
    info["data_sha256"] = data_fingerprint(cfg)  # a changed data file reruns the stages after this one
    info["provenance"] = data_provenance(cfg)  # e.g. lossless torchvision CIFAR or the JPEG shards
    status = write_status(out_dir, reason, **info)
    missing = fid_weights(cfg).get("missing")
    if reason is None and missing is None:
        mu, _ = reference_stats(cfg, out_dir / "fid_ref" / "stats.npz")
        write_status(out_dir / "fid_ref", None, n_images=cfg.sample.fid_ref_n or info["n_train"], dim=len(mu))
    elif reason is None:
        write_status(out_dir / "fid_ref", missing)
    else:
        write_status(out_dir / "fid_ref", reason)
    return status


def train(
    cfg: Config,
    method: str,
    out_dir: str | Path,
    *,
    init: str | Path | None = None,
    ref_path=None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `method` (standard_at | ratio | dualat) into out_dir; dualat starts from `init`.

    Under torchrun (after `distributed.init_from_env()`) every process trains on its shard of the
    training and OOD sets with the same seeds; batch sizes are per process."""
    from dualat.data import BatchStream, classification_transform, derive_seed, generative_transform, stage2_streams
    from dualat.train import train_stage1, train_stage2

    out_dir = Path(out_dir)
    if method not in METHOD_STAGE:
        raise ValueError(f"method must be one of {', '.join(METHOD_STAGE)}, got {method!r}")
    reason = missing_data(cfg) or (read_status(Path(init).parent) if init is not None else None)
    if reason is not None:
        return write_status(out_dir, reason, method=method)
    rank, world = distributed.rank(), distributed.world_size()

    def part(dataset):  # this process's shard of a training or OOD set
        return dataset if world == 1 else distributed.shard(dataset, rank, world)

    torch.manual_seed(cfg.stage1.seed)
    model = new_model(cfg)
    data_name = cfg.data.dataset
    # the first stage*.eval_n test images (0 = all) for the PGD accuracy that selects checkpoints
    eval_n = cfg.stage2.eval_n if method == "dualat" else cfg.stage1.eval_n
    x_test, y_test = stack(test_set(cfg), eval_n)
    config = {"profile": cfg.profile, "method": method} | to_dict(cfg)
    key = runs.resume_key(
        to_dict(cfg), runs.RESUME_KEYS[method], data=data_fingerprint(cfg), init=sha256_file(init) if init else None
    )
    if method in ("standard_at", "ratio"):
        s = cfg.stage1
        ds = train_set(cfg, classification_transform(data_name))
        weights = getattr(ds, "sample_weights", None) if cfg.data.rin_balance else None
        ds = part(ds)
        if weights is not None and world > 1:
            weights = weights[ds.indices]
        stream = BatchStream(ds, s.batch_size, s.seed, workers=cfg.data.workers, weights=weights)
        ood_stream = None
        if method == "ratio":
            aug = (
                classification_transform(data_name)
                if cfg.ratio.ood_augmentation == "classification"
                else generative_transform(data_name)
            )
            ood_stream = BatchStream(
                part(ood_set(cfg, aug)), s.batch_size, derive_seed(s.seed, 1), workers=cfg.data.workers
            )
        result = train_stage1(
            model, s, stream, len(stream.sampler), (x_test, y_test), out_dir,
            ratio=cfg.ratio if method == "ratio" else None, ood_stream=ood_stream, config=config, key=key,
            progress=progress, stop_after=stop_after,
        )  # fmt: skip
    else:
        if init is None:
            raise ValueError("dualat training needs init=<stage-1 checkpoint>")
        s = cfg.stage2
        model = load_model(cfg, init, "ema" if s.init == "ema" else "plain").train()
        streams = stage2_streams(
            part(train_set(cfg, classification_transform(data_name))),
            part(train_set(cfg, generative_transform(data_name, s.sampler.augmentation))),
            part(ood_set(cfg, generative_transform(data_name, s.sampler.augmentation))),
            s.batch_size, s.seed, cfg.data.workers,
        )  # fmt: skip
        fid_fn = sample_fid_fn(cfg, ref_path) if ref_path is not None and s.eval_fid_samples > 0 else None
        result = train_stage2(
            model, s, streams.cls, streams.gen, streams.ood, (x_test, y_test), out_dir,
            fid_fn=fid_fn, config=config, key=key, progress=progress, stop_after=stop_after,
        )  # fmt: skip
    return write_status(
        out_dir,
        None,
        method=method,
        seconds=result["seconds"],  # training time over every resume
        steps=result["steps"],
        best=result["best"],
        T=result.get("T"),
    )
