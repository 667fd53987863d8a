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
    assert "Clean accuracy 50.0% on 16" in reading and "PGD 25.0%" in reading and "AutoAttack 12.5% on 8" in reading
    assert "ECE 3.1%" in reading
    assert ("not evidence for the paper's claims" in reading) == (profile != "paper")


def test_not_computed_record_shows_its_reason(tmp_path):
    _write(tmp_path, "generation", NotComputed("cifar100: data not found"), "quick")
    assert "cifar100: data not found" in views.generation(tmp_path)
    assert "was not produced" in views.ood(tmp_path / "nowhere")


def test_generation_reading_compares_with_the_control(tmp_path):
    kid = {"mean": 0.0415, "std": 0.0049}
    control = {"fid": 156.5, "kid": {"mean": 0.0076, "std": 0.0018}}
    metrics = {"n_samples": 150, "steps": 10, "fid_conditional": 176.3, "kid_conditional": kid, "control": control}
    _write(tmp_path, "generation", metrics, "quick")
    reading = views.generation(tmp_path)
    assert "FID 176.3, KID×10³ 41.5 ± 4.9" in reading and "FID 156.5, KID×10³ 7.6 ± 1.8" in reading


def test_ood_reading_and_histograms(tmp_path):
    cell = {"max_prob": {"clean": 0.6, "adversarial": 0.4}, "neg_energy": {"clean": 0.7, "adversarial": 0.3}}
    metrics = {"sets": {"noise": cell, "svhn": NotComputed("svhn: data not found")}}
    _write(tmp_path, "ood", metrics, "quick")
    assert "noise 0.70 / 0.30" in views.ood(tmp_path) and "svhn not computed" in views.ood(tmp_path)
    rng = np.random.default_rng(0)
    scores = {f"id/{k}": rng.normal(size=20) for k in ("max_prob", "neg_energy")}
    for name in ("noise", "svhn"):
        for k in ("max_prob", "neg_energy"):
            scores |= {f"{name}/{k}/clean": rng.normal(size=8), f"{name}/{k}/adversarial": rng.normal(size=8)}
    fig = views.score_histograms(scores)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "noise: max_prob"
    assert [len(ax.patches) for ax in fig.axes] == [61] * 4  # 30 + 30 bars and one outline each


def test_training_curves_wrap_into_rows_of_three(tmp_path):
    from dualat import reports

    keys = ["robust_acc", "fid", "T", "auc", "bce"]
    history = [{"step": s, "images": 128 * s} | {k: float(s) for k in keys} for s in (1, 2, 3)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    fig = reports.plot_training(tmp_path, keys)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and [ax.get_ylabel() for ax in shown] == keys  # 2 rows of 3, one empty
    assert fig.get_size_inches()[0] <= 15 and all(len(ax.lines) == 1 for ax in shown)


@pytest.mark.parametrize("group", ["accuracy", "generation", "counterfactuals"])
def test_record_of_not_computed_values_reads_its_reason(tmp_path, group):
    """The pipeline writes a missing dataset's record as every value "not computed: <reason>"."""
    reason = NotComputed("cifar100: data not found")
    keys = {"accuracy": ["clean_acc", "autoattack"], "generation": ["fid_conditional", "control"]}
    _write(tmp_path, group, dict.fromkeys(keys.get(group, ["fid", "eps"]), reason), "quick")
    assert "not computed: cifar100: data not found" in getattr(views, group)(tmp_path)
