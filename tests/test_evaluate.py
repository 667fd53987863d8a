"""dualat.evaluation on tiny models and sizes (CPU, a few seconds each but the Inception smoke test)."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dualat import artifacts, checkpoint, datasets, fid_reference, model_io
from dualat.config import load
from dualat.evaluation import classification, counterfactuals, generation, ood_detection, runner
from dualat.models import CIFAR_MEAN, CIFAR_STD, Normalize
from dualat.records import NotComputed, read_record
from tests.conftest import shared_data_root

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
ROOT = shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="offline CIFAR-10 shards not found")


def _cfg(root=ROOT, **overrides):
    """The quick cifar10 profile with 32 test images, shrunk further by `overrides`, reading data
    from `root`. (The shard cache is keyed by the number of images: one n_test keeps it warm.)"""
    cfg = load(PARAMS, dataset="cifar10", profile="quick", overrides={"data.n_test": 32} | overrides)
    return dataclasses.replace(cfg, data_root=str(root or ""))


def _save(model: nn.Module, folder: Path) -> Path:
    """A checkpoint and status.json as the training code writes them."""
    path = checkpoint.save(folder / "final.pt", {"model": model.state_dict()})
    artifacts.write_status(folder, None)
    return path


def _pooled(x: torch.Tensor) -> np.ndarray:
    """A cheap stand-in for the Inception features: 4x4 average-pooled pixels (N, 48)."""
    return F.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


class TinyNet(nn.Module):
    """Three strided convolutions and a linear head: fast enough for AutoAttack on the CPU."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 64, 3, 2, 1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.c1(self.normalize(x)))
        x = F.relu(self.c3(F.relu(self.c2(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def tiny_net_models(monkeypatch):
    """model_io.load_model builds TinyNet instead of the config's WRN (AutoAttack and attacks in
    seconds); the WRN path is exercised by the generation test."""
    monkeypatch.setattr(model_io, "new_model", lambda cfg: TinyNet(cfg.data.num_classes))


@pytest.fixture(scope="module")
def trained_tiny():
    """TinyNet after 40 plain SGD steps on 512 CIFAR-10 training images (about 30% accuracy)."""
    if ROOT is None:
        pytest.skip("offline CIFAR-10 shards not found")
    torch.manual_seed(0)
    x, y = datasets.stack(datasets.train_set(_cfg()), 512)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _quick_autoattack(monkeypatch):
    """AutoAttack "standard" (all four attacks) with small budgets, so it runs in seconds here."""
    from pyautoattack import AutoAttack

    original = AutoAttack._set_version

    def small(self, version="standard"):
        original(self, version)
        self.apgd.n_iter = self.apgd_targeted.n_iter = self.fab.n_iter = 10
        self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 2
        self.square.n_queries = 100

    monkeypatch.setattr(AutoAttack, "_set_version", small)


# --- accuracy -------------------------------------------------------------------------------------


def test_accuracy_order_and_record(trained_tiny, tiny_net_models, tmp_path, monkeypatch):
    _quick_autoattack(monkeypatch)
    cfg = _cfg(**{"evaluate.autoattack_n": 32, "evaluate.autoattack_eps": 0.5})
    path = _save(trained_tiny, tmp_path / "model")
    m = classification.accuracy(cfg, "standard_at", path, tmp_path / "eval", progress=False)
    aa = m["autoattack"]
    assert m["n_test"] == aa["n"] == 32
    assert m["clean_acc"] > 0.15  # the model has learnt something
    assert aa["robust_acc"] <= m["pgd_acc"] <= m["clean_acc"]
    assert aa["clean_acc"] == pytest.approx(m["clean_acc"])
    assert list(aa["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert sorted(aa["per_attack"].values(), reverse=True) == list(aa["per_attack"].values())
    rel = m["reliability"]
    assert len(rel["bin_edges"]) == cfg.evaluate.ece_bins + 1 and sum(rel["bin_count"]) == 32
    assert 0 <= m["ece"] <= 1
    record = read_record(tmp_path / "eval" / "accuracy.json")
    assert record["metrics"]["pgd_acc"] == m["pgd_acc"] and record["wall_seconds"] > 0
    assert record["extra"]["method"] == "standard_at" and record["extra"]["dataset"] == "cifar10"
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 0
    state = tmp_path / "eval" / "autoattack_state.json"
    assert state.is_file()  # resumable
    # Another checkpoint in the same folder must not resume this model's AutoAttack results.
    checkpoint.save(path, {"model": TinyNet().state_dict()})
    monkeypatch.setattr("pyautoattack.AutoAttack.run_standard_evaluation", _no_attack)
    other = classification.accuracy(cfg, "standard_at", path, tmp_path / "eval", progress=False)
    assert other["clean_acc"] != m["clean_acc"]
    assert other["autoattack"]["clean_acc"] == pytest.approx(other["clean_acc"])


def _no_attack(self, x, y, **kw):
    return x, y


# --- counterfactuals ------------------------------------------------------------------------------


def test_counterfactuals_stay_in_ball_and_raise_target():
    torch.manual_seed(0)
    model = TinyNet().eval()
    cfg = _cfg(**{"evaluate.cf_steps": 5})
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.arange(16) % 10
    with torch.no_grad():
        before = model(x).gather(1, t[:, None]).squeeze(1)
    for eps in (0.5, 2.0):
        x_cf = counterfactuals.counterfactual_images(model, x, t, eps, cfg.evaluate)
        assert (x_cf - x).flatten(1).norm(dim=1).max() <= eps * (1 + 1e-5)
        assert x_cf.min() >= 0 and x_cf.max() <= 1
        with torch.no_grad():
            after = model(x_cf).gather(1, t[:, None]).squeeze(1)
        assert (after > before).all()


@needs_data
def test_counterfactuals_record_and_feature_cache(tiny_net_models, tmp_path):
    cfg = _cfg(**{"evaluate.cf_n": 40, "evaluate.cf_eps": [0.5, 2.0], "evaluate.cf_steps": 3, "sample.fid_ref_n": 100})
    path = _save(TinyNet(), tmp_path / "model")
    sizes = []

    def features(x):
        sizes.append(len(x))
        return _pooled(x)

    cache = tmp_path / "cf_real.npz"
    m = counterfactuals.counterfactuals(
        cfg, "dualat", path, tmp_path / "eval", cache, features=features, progress=False
    )
    assert m["eps"] == [0.5, 2.0] and m["n"] == 40
    assert all(math.isfinite(f) and f > 0 for f in m["fid"])
    assert all(0 <= c <= 1 for c in m["confidence"])
    assert len(m["per_class_fid"]) == 2 and all(len(p) == 10 for p in m["per_class_fid"])
    assert cache.is_file() and sum(sizes) == 100 + 2 * 40  # real set once, then each eps
    sizes.clear()
    again = counterfactuals.counterfactuals(
        cfg, "dualat", path, tmp_path / "eval", cache, features=features, progress=False
    )
    assert sum(sizes) == 2 * 40  # real features came from the cache
    assert again["fid"] == pytest.approx(m["fid"]) and again["confidence"] == pytest.approx(m["confidence"])
    assert (tmp_path / "eval" / "counterfactuals.png").is_file()
    record = json.loads((tmp_path / "eval" / "counterfactuals.json").read_text())
    assert record["metrics"]["eps"] == [0.5, 2.0]


# --- OOD detection --------------------------------------------------------------------------------


@needs_data
def test_ood_missing_set_is_not_computed(tiny_net_models, tmp_path):
    sets = ["cifar100", "svhn", "tinyimagenet32", "noise"]  # the first two are not in the offline root
    cfg = _cfg(**{"evaluate.ood_n": 16, "evaluate.ood_sets": sets, "evaluate.ood_attack.steps": 2})
    path = _save(TinyNet(), tmp_path / "model")
    m = ood_detection.ood(cfg, "ratio", path, tmp_path / "eval", progress=False)
    assert m["n_id"] == 32 and m["ood_n"] == 16
    for name in ("cifar100", "svhn"):
        assert isinstance(m["sets"][name], NotComputed)
    for name in ("tinyimagenet32", "noise"):
        assert m["sets"][name]["n"] == 16
        for score in ("max_prob", "neg_energy"):
            for kind in ("clean", "adversarial"):
                assert 0 <= m["sets"][name][score][kind] <= 1
    record = json.loads((tmp_path / "eval" / "ood.json").read_text())
    assert record["metrics"]["sets"]["svhn"].startswith("not computed: svhn")


def test_ood_attacks_lower_the_auroc(tiny_net_models, tmp_path):
    """Attacks aimed at each score make uniform noise look more in-distribution."""
    if ROOT is None:
        pytest.skip("offline CIFAR-10 shards not found")
    torch.manual_seed(0)
    cfg = _cfg(**{"evaluate.ood_n": 16, "evaluate.ood_sets": ["noise"], "evaluate.ood_attack.steps": 3})
    path = _save(TinyNet(), tmp_path / "model")
    cell = ood_detection.ood(cfg, "ratio", path, tmp_path / "eval", progress=False)["sets"]["noise"]
    for score in ("max_prob", "neg_energy"):
        assert cell[score]["adversarial"] <= cell[score]["clean"]
    with np.load(tmp_path / "eval" / "scores.npz") as f:  # the scores behind each AUROC (views.ood plots them)
        for score in ("max_prob", "neg_energy"):
            s_id, s_clean = f[f"id/{score}"], f[f"noise/{score}/clean"]
            assert len(s_id) == cfg.data.n_test and len(s_clean) == len(f[f"noise/{score}/adversarial"]) == 16
            share = (s_id[:, None] > s_clean[None, :]).mean() + 0.5 * (s_id[:, None] == s_clean[None, :]).mean()
            assert share == pytest.approx(cell[score]["clean"])  # AUROC = P(score_id > score_ood)


# --- not computed ---------------------------------------------------------------------------------


def test_not_computed_model_gives_not_computed_records(tmp_path):
    folder = tmp_path / "model"
    artifacts.write_status(folder, NotComputed("cifar100: data not found"))
    cfg = _cfg()
    path = folder / "final.pt"  # never written
    out = tmp_path / "eval"
    results = {
        "accuracy": classification.accuracy(cfg, "dualat", path, out),
        "generation": generation.generation(cfg, "dualat", path, tmp_path / "ref.npz", out),
        "counterfactuals": counterfactuals.counterfactuals(cfg, "dualat", path, out),
        "ood": ood_detection.ood(cfg, "dualat", path, out),
    }
    for group, metrics in results.items():
        assert set(metrics) == set(runner.METRIC_KEYS[group])
        record = json.loads((out / f"{group}.json").read_text())
        flat = list(record["metrics"].values())
        if group == "ood":
            assert set(record["metrics"]["sets"]) == set(cfg.evaluate.ood_sets)
            flat = [v for k, v in record["metrics"].items() if k != "sets"] + list(record["metrics"]["sets"].values())
        assert all(v == "not computed: cifar100: data not found" for v in flat)
    assert not (tmp_path / "ref.npz").exists()


def test_missing_data_gives_not_computed_record(tiny_wrn, tmp_path):
    path = _save(tiny_wrn, tmp_path / "model")
    m = classification.accuracy(_cfg(root=tmp_path / "empty"), "standard_at", path, tmp_path / "eval", progress=False)
    assert isinstance(m["clean_acc"], NotComputed) and "cifar10" in m["clean_acc"].reason


# --- generation (real Inception: about 0.1-0.4 s per image here) -----------------------------------


@needs_data
def test_generation_smoke(tiny_wrn, tmp_path):
    overrides = {
        "sample.n_samples": 12,
        "sample.n_grid_samples": 4,
        "sample.steps_grid": [1, 2],
        "sample.steps.dualat": 2,
        "sample.fid_ref_n": 8,
        "sample.batch_size": 8,
        "sample.seeds": [0, 1],
        "sample.kid_subsets": 5,
        "sample.is_weights": str(tmp_path / "missing_is.pth"),
        "stage2.eval_fid_samples": 4,  # selection block: 4 of the 20 seed images
        "data.n_ood": 20,
    }
    cfg = _cfg(**overrides)
    path = _save(tiny_wrn, tmp_path / "model")
    out = tmp_path / "eval"
    m = generation.generation(cfg, "dualat", path, tmp_path / "fid_ref.npz", out, progress=False)
    for key in ("fid_conditional", "fid_unconditional", "fid_conditional_std", "fid_unconditional_std"):
        assert isinstance(m[key], float) and math.isfinite(m[key]) and m[key] > 0
    assert [r["seed"] for r in m["per_seed"]] == [0, 1]
    assert m["fid_conditional"] == pytest.approx(np.mean([r["fid_conditional"] for r in m["per_seed"]]))
    for kid in (m["kid_conditional"], m["kid_unconditional"], m["control"]["kid"]):
        assert set(kid) == {"mean", "std", "subsets", "subset_size"} and kid["subset_size"] == 8  # min(N, ref)
        assert math.isfinite(kid["mean"]) and kid["std"] >= 0 and kid["subsets"] == 5
    assert math.isfinite(m["control"]["fid"]) and m["control"]["fid"] > 0
    assert "missing_is.pth" in m["inception_score"].reason
    p = m["fid_protocol"]
    assert p["mode"] == "clean" and p["n"] == 12 and p["reference"]["key"] == fid_reference.fid_ref_key(cfg)
    assert p["weights_sha256"] == fid_reference.fid_weights(cfg)["sha256"] and len(p["weights_sha256"]) == 64
    seeds = m["seeds"]
    assert seeds["permutation_seeds"] == [0, 1] and seeds["n_source"] == 20 and seeds["n_selection"] == 4
    assert len(set(seeds["first_indices_sha256"])) == 2
    assert m["steps"] == 2 and m["step_size"] == cfg.sample.step_size and m["n_samples"] == 12
    assert m["grid"]["T"] == [1, 2] and m["grid"]["best_T"] in (1, 2)
    assert all(math.isfinite(f) and f > 0 for f in m["grid"]["fid"])
    for name in ("seeds", "samples_conditional", "samples_unconditional", "samples_conditional_T1"):
        assert (out / f"{name}.png").stat().st_size > 0
    from PIL import Image

    with Image.open(out / "samples_conditional_T2.png") as img:  # the 4 grid seeds in one row of 10
        assert img.size == (2 + 4 * (32 + 2), 2 + 32 + 2)
    assert (tmp_path / "fid_ref.npz").is_file()
    record = read_record(out / "generation.json")
    assert isinstance(record["metrics"]["inception_score"], NotComputed)
    assert record["metrics"]["per_seed"][1]["kid_conditional"] == m["per_seed"][1]["kid_conditional"]


@needs_data
def test_generation_without_fid_weights_is_not_computed(tiny_wrn, tmp_path, monkeypatch):
    """FID mode legacy_pytorch without pytorch-fid's weights: every FID/KID says why, no crash."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = _cfg(**{"sample.fid_mode": "legacy_pytorch"})
    path = _save(tiny_wrn, tmp_path / "model")
    m = generation.generation(cfg, "dualat", path, tmp_path / "fid_ref.npz", tmp_path / "eval", progress=False)
    for key in ("fid_conditional", "fid_unconditional", "kid_conditional", "control", "per_seed"):
        assert isinstance(m[key], NotComputed) and "pt_inception-2015-12-05" in m[key].reason
    assert m["fid_protocol"]["mode"] == "legacy_pytorch" and m["fid_protocol"]["weights"] is None
    assert "legacy_pytorch" in fid_reference.fid_ref_key(cfg)["mode"]
    assert not (tmp_path / "fid_ref.npz").exists()


# --- seed images (issue 9, point 5) -----------------------------------------------------------------


def test_seed_draws_cover_the_source_and_keep_selection_apart():
    from dualat.generate import indices_sha256, report_indices, seed_split

    selection, pool = seed_split(5000, 100, selection_seed=1000)
    again, _ = seed_split(5000, 100, selection_seed=1000)
    assert np.array_equal(selection, again)  # deterministic
    assert len(selection) == 100 and not set(selection) & set(pool)  # disjoint
    assert sorted(np.concatenate([selection, pool])) == list(range(5000))
    report = {seed: report_indices(pool, 150, seed) for seed in (0, 1)}
    assert np.array_equal(report[0], report_indices(pool, 150, 0))
    assert indices_sha256(report[0]) != indices_sha256(report[1])
    for idx in report.values():
        assert len(set(idx)) == 150 and not set(idx) & set(selection)
        assert idx.max() > 4000 and idx.min() < 1000  # spread over the whole source, not its head
    with pytest.raises(ValueError, match="outside the selection"):
        report_indices(pool, 4901, 0)
    with pytest.raises(ValueError, match="none left"):
        seed_split(100, 100, 0)


def test_sample_fid_fn_uses_the_selection_block(monkeypatch):
    """Training-time FID reads the held-out selection seeds, never the reported ones."""
    from dualat import generate

    cfg = _cfg(**{"data.n_ood": 300})
    seen = []
    monkeypatch.setattr(fid_reference, "inception", lambda cfg: lambda x: np.zeros((len(x), 4)))
    monkeypatch.setattr(fid_reference, "reference_stats", lambda *a, **k: None)
    monkeypatch.setattr(datasets, "ood_set", lambda cfg, t=None: list(range(300)))
    monkeypatch.setattr(generate, "images_at", lambda ds, idx: seen.append(np.array(idx)) or torch.zeros(0))
    monkeypatch.setattr(generate, "generate", lambda *a, **k: torch.zeros(4, 3, 32, 32))
    monkeypatch.setattr("dualat.metrics.fid_to_reference", lambda f, p: 1.0)
    fid_reference.sample_fid_fn(cfg, "unused")(None, 40)
    selection, pool = generate.seed_split(300, generate.selection_size(cfg), cfg.sample.selection_seed)
    assert np.array_equal(seen[0], selection[:40])
    assert not set(seen[0]) & set(generate.report_indices(pool, cfg.sample.n_samples, cfg.sample.seeds[0]))
