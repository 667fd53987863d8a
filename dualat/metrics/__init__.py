"""Evaluation metrics: thin wrappers over pyautoattack, clean-fid and scikit-learn.

Images are float tensors in [0, 1], NCHW; models map them to logits (B, K). Heavy libraries are
imported inside the functions that need them, so importing this package stays cheap.
"""

from dualat.metrics.accuracy import clean_accuracy, pgd_accuracy, predict_logits
from dualat.metrics.calibration import expected_calibration_error, plot_reliability, reliability_diagram_data
from dualat.metrics.generative import (
    FID_MODES,
    InceptionFeatures,
    cached_stats,
    classwise_fid,
    exceeds_uncertainty,
    feature_stats,
    fid,
    fid_from_stats,
    fid_to_reference,
    fid_weights,
    inception_path,
    inception_score,
    inception_score_from_probs,
    kid,
)
from dualat.metrics.ood import auroc, score_max_prob, score_neg_energy
from dualat.metrics.robust import autoattack_accuracy
from dualat.records import NotComputed

__all__ = [
    "FID_MODES",
    "NotComputed",
    "InceptionFeatures",
    "auroc",
    "autoattack_accuracy",
    "cached_stats",
    "classwise_fid",
    "clean_accuracy",
    "expected_calibration_error",
    "exceeds_uncertainty",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "fid_to_reference",
    "fid_weights",
    "inception_path",
    "inception_score",
    "inception_score_from_probs",
    "kid",
    "pgd_accuracy",
    "plot_reliability",
    "predict_logits",
    "reliability_diagram_data",
    "score_max_prob",
    "score_neg_energy",
]
