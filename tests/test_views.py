"""What the evaluation notebooks display (dualat.views): a reading of the record's numbers, the
profile's caveat outside the paper profile, the reason when not computed, the score histograms."""

import json

import numpy as np
import pytest

from dualat import views
from dualat.records import NotComputed, write_record


def _write(folder, group, metrics, profile):
    write_record(folder / f"{group}.json", metrics, config={"profile": profile}, checkpoint=None)


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_accuracy_reading_states_the_numbers_and_the_caveat(tmp_path, profile):
    autoattack = {"robust_acc": 0.125, "n": 8}
    metrics = {"clean_acc": 0.5, "pgd_acc": 0.25, "autoattack": autoattack, "ece": 0.031, "n_test": 16}
    _write(tmp_path, "accuracy", metrics, profile)
    reading = views.accuracy(tmp_path)
    # each accuracy ± its binomial standard error sqrt(p(1-p)/n), with n
    assert "clean 50 ± 12 (n = 16)" in reading and "PGD 25 ± 11 (n = 16)" in reading
    assert "AutoAttack 12 ± 12 (n = 8)" in reading
    assert "ECE 3.1%" in reading
    assert ("not evidence for the paper's claims" in reading) == (profile != "paper")


def test_not_computed_record_shows_its_reason(tmp_path):
    _write(tmp_path, "generation", NotComputed("cifar100: data not found"), "quick")
    assert "cifar100: data not found" in views.generation(tmp_path)
    assert "was not produced" in views.ood(tmp_path / "nowhere")


def test_generation_reading_compares_with_the_control(tmp_path, monkeypatch):
    kid = {"mean": 0.0415, "std": 0.0049}
    control = {"fid": 156.5, "kid": {"mean": 0.0076, "std": 0.0018}}
    metrics = {"n_samples": 150, "steps": 10, "fid_conditional": 176.3, "kid_conditional": kid, "control": control}
    _write(tmp_path, "generation", metrics, "quick")
    for name in ("seeds", "samples_conditional", "samples_unconditional"):
        (tmp_path / f"{name}.png").write_bytes(b"png")
    shown = []
    monkeypatch.setattr(views, "display", lambda obj: shown.append(getattr(obj, "data", obj)))
    monkeypatch.setattr(views, "Image", lambda filename: filename)
    reading = views.generation(tmp_path)
    assert "FID 176.3, KID×10³ 41.5 ± 4.9" in reading and "FID 156.5, KID×10³ 7.6 ± 1.8" in reading
    captions = [x for x in shown if isinstance(x, str) and x.startswith("*")]
    assert [c.split(",")[0].split(" (")[0] for c in captions] == [
        "*Seed images x0",
        "*Class-conditional samples of the same seeds",
        "*Unconditional samples",
    ]  # each grid under its label, in the order shown


def test_ood_reading_and_histograms(tmp_path):
    """The reading names each set and score, with every AUROC ± its standard error (DeLong's from
    scores.npz) and the set sizes; the histograms are titled with the sets' and scores' names."""
    from dualat.metrics import auroc
    from dualat.reports import delong_se, hanley_mcneil_se, pm_text

    rng = np.random.default_rng(0)
    scores = {f"id/{k}": rng.normal(1.0, 1.0, size=20) for k in ("max_prob", "neg_energy")}
    cell = {"n": 8}
    for k in ("max_prob", "neg_energy"):
        scores |= {f"noise/{k}/clean": rng.normal(size=8), f"noise/{k}/adversarial": rng.normal(0.5, 1.0, size=8)}
        cell[k] = {i: auroc(scores[f"id/{k}"], scores[f"noise/{k}/{i}"]) for i in ("clean", "adversarial")}
    metrics = {"sets": {"noise": cell, "svhn": NotComputed("svhn: data not found")}, "n_id": 20}
    _write(tmp_path, "ood", metrics, "quick")
    reading = views.ood(tmp_path)
    assert "score -E(x): uniform noise " in reading and "score max p(y|x): uniform noise " in reading
    assert "(n = 20 test + 8 OOD)" in reading and "SVHN not computed" in reading
    no_scores = views.ood_reading(metrics)
    np.savez(tmp_path / "scores.npz", **scores)
    with_scores = views.ood(tmp_path)
    s = delong_se(scores["id/neg_energy"], scores["noise/neg_energy/clean"])
    auc = cell["neg_energy"]["clean"]
    assert pm_text(auc, s) in with_scores
    assert pm_text(auc, hanley_mcneil_se(auc, 20, 8)) in no_scores
    fig = views.score_histograms(scores)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "uniform noise: max p(y|x)"
    assert [len(ax.patches) for ax in fig.axes] == [61] * 2  # 30 + 30 bars and one outline each


def test_training_curves_wrap_into_rows_of_three(tmp_path):
    from dualat import reports

    keys = ["robust_acc", "fid", "T", "auc", "bce"]
    history = [{"step": s, "images": 128 * s} | {k: float(s) for k in keys} for s in (1, 2, 3)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    fig = reports.plot_training(tmp_path, keys)
    shown = [ax for ax in fig.axes if ax.axison]
    labels = ["robust accuracy, PGD (%)", "FID", "PGD steps T of L_BCE", "AUC of L_BCE's real vs generated (batches)",
              "L_BCE"]  # fmt: skip
    assert len(fig.axes) == 6 and [ax.get_ylabel() for ax in shown] == labels  # 2 rows of 3, one empty
    assert fig.get_size_inches()[0] <= 15 and all(len(ax.lines) == 1 for ax in shown)


@pytest.mark.parametrize("group", ["accuracy", "generation", "counterfactuals"])
def test_record_of_not_computed_values_reads_its_reason(tmp_path, group):
    """The pipeline writes a missing dataset's record as every value "not computed: <reason>"."""
    reason = NotComputed("cifar100: data not found")
    keys = {"accuracy": ["clean_acc", "autoattack"], "generation": ["fid_conditional", "control"]}
    _write(tmp_path, group, dict.fromkeys(keys.get(group, ["fid", "eps"]), reason), "quick")
    assert "not computed: cifar100: data not found" in getattr(views, group)(tmp_path)


def test_counterfactual_caption_matches_the_grid(tmp_path, monkeypatch):
    """The grid has one training image per row (the original, then each eps: evaluation.
    counterfactuals saves rows of 1 + len(eps)); the caption says so, with the eps values."""
    metrics = {"eps": [0.5, 1.0], "fid": [50.0, 40.0], "confidence": [0.3, 0.6], "n": 10}
    _write(tmp_path, "counterfactuals", metrics, "quick")
    (tmp_path / "counterfactuals.png").write_bytes(b"png")
    shown = []
    monkeypatch.setattr(views, "display", lambda obj: shown.append(getattr(obj, "data", obj)))
    monkeypatch.setattr(views, "Image", lambda filename: filename)
    views.counterfactuals(tmp_path)
    caption = "*One training image per row: the original in the first column, then its counterfactual at ε = 0.5, 1.*"
    assert caption in shown and shown.index(caption) + 1 == shown.index(str(tmp_path / "counterfactuals.png"))
