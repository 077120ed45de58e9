"""Evaluation metrics for a classifier's held-out predictions, as plain JSON-ready dicts.

Pure functions on numpy arrays so the fine-tuned model, the TF-IDF baseline and the exported
INT8/FP16 variants are all scored by exactly the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

DEFAULT_BINS = 15


def _bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin b covers (b/n_bins, (b+1)/n_bins]; a confidence of exactly 0 goes to bin 0."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, confidences, side="left")


def _check_calibration_inputs(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hits = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != hits.shape:
        raise ValueError(f"{conf.size} confidences but {hits.size} correctness flags")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if conf.size and (conf.min() < 0.0 or conf.max() > 1.0):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, hits


def reliability_bins(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
) -> list[dict[str, float | int]]:
    """Non-empty equal-width confidence bins with their mean confidence and accuracy.

    This is the data behind a reliability diagram: a calibrated model has accuracy close to
    confidence in every bin.
    """
    conf, hits = _check_calibration_inputs(confidences, correct, n_bins)
    index = _bin_index(conf, n_bins)
    bins: list[dict[str, float | int]] = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        if not count:
            continue
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": count,
                "confidence": float(conf[mask].mean()),
                "accuracy": float(hits[mask].mean()),
            }
        )
    return bins


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
) -> float:
    """Expected calibration error: how far stated confidence is from observed accuracy.

    Confidences (the top-class probability) are put into `n_bins` equal-width bins
    (b/n_bins, (b+1)/n_bins] over [0, 1]. With B_b the examples in bin b and n the total,

        ECE = sum_b |B_b| / n * |accuracy(B_b) - mean_confidence(B_b)|

    so 0 means perfectly calibrated and 1 the worst possible. An empty input scores 0.
    """
    conf, hits = _check_calibration_inputs(confidences, correct, n_bins)
    if not conf.size:
        return 0.0
    total = conf.size
    return float(
        sum(
            b["count"] / total * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(conf, hits, n_bins)
        )
    )


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Score class probabilities against true label indices; every value is JSON-serialisable.

    Predictions are the argmax of `probs`. Per-class and macro scores cover every label in
    `labels` (a class never predicted or never seen scores 0), so reports from different
    models on the same split line up. Confusion rows are true labels, columns predictions.
    """
    truth = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(labels)
    if p.ndim != 2 or p.shape[0] != truth.size:
        raise ValueError(f"probs must have shape ({truth.size}, {k}), got {p.shape}")
    if p.shape[1] != k:
        raise ValueError(f"probs has {p.shape[1]} columns for {k} labels")
    if not truth.size:
        raise ValueError("cannot score an empty evaluation set")
    if truth.min() < 0 or truth.max() >= k:
        raise ValueError(f"y_true must hold label indices in [0, {k})")

    predicted = p.argmax(axis=1)
    confidence = p.max(axis=1)
    correct = predicted == truth
    label_ids = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=label_ids, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=label_ids).tolist(),
        "ece": expected_calibration_error(confidence, correct, n_bins),
        "ece_bins": n_bins,
        "mean_confidence": float(confidence.mean()),
        "reliability": reliability_bins(confidence, correct, n_bins),
        "examples": int(truth.size),
    }


def classification_scores(
    truth: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 over all labels (absent ones count as 0): the headline pair that
    training, `trainer evaluate` and variant comparisons all report."""
    truth_arr = np.asarray(truth, dtype=np.int64)
    pred_arr = np.asarray(predicted, dtype=np.int64)
    if truth_arr.shape != pred_arr.shape or truth_arr.size == 0:
        raise ValueError("truth and predicted must be non-empty and of equal length")
    return {
        "accuracy": float(accuracy_score(truth_arr, pred_arr)),
        "macro_f1": float(
            f1_score(
                truth_arr,
                pred_arr,
                average="macro",
                labels=list(range(num_labels)),
                zero_division=0,
            )
        ),
    }
