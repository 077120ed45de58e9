"""Evaluation metrics: ECE against hand-computed values, per-class scores on tiny confusions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.metrics import classification_metrics, expected_calibration_error, reliability_bins

LABELS = ["a", "b", "c"]


def test_ece_matches_hand_computed_value() -> None:
    # 5 bins of width 0.2. Bin (0.4, 0.6]: conf 0.5, 0.5, acc 1/2 -> gap 0.
    # Bin (0.6, 0.8]: conf 0.7, 0.7, 0.7, acc 2/3 -> gap 0.0333.. weighted 3/6.
    # Bin (0.8, 1.0]: conf 0.9, acc 0 -> gap 0.9 weighted 1/6.
    confidences = np.array([0.5, 0.5, 0.7, 0.7, 0.7, 0.9])
    correct = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    expected = 3 / 6 * abs(2 / 3 - 0.7) + 1 / 6 * 0.9
    assert expected_calibration_error(confidences, correct, n_bins=5) == pytest.approx(expected)


def test_ece_single_bin_is_gap_between_mean_confidence_and_accuracy() -> None:
    confidences = np.array([0.9, 0.8, 0.6, 0.3])
    correct = np.array([1, 1, 0, 0])
    assert expected_calibration_error(confidences, correct, n_bins=1) == pytest.approx(0.65 - 0.5)


def test_ece_bins_are_right_closed_and_zero_goes_to_first_bin() -> None:
    bins = reliability_bins(np.array([0.0, 0.5, 0.5000001, 1.0]), np.ones(4), n_bins=2)
    assert [(b["lower"], b["upper"], b["count"]) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]


def test_ece_extremes() -> None:
    assert expected_calibration_error(np.ones(4), np.ones(4), 15) == 0.0
    assert expected_calibration_error(np.ones(4), np.zeros(4), 15) == 1.0
    assert expected_calibration_error(np.array([]), np.array([]), 15) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([1.5]), np.array([1]), 15)
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0.5, 0.5]), np.array([1]), 15)


def one_hot(predicted: list[int], k: int = 3, confidence: float = 1.0) -> np.ndarray:
    """Probabilities whose argmax is `predicted`, with the rest spread evenly."""
    probs = np.full((len(predicted), k), (1.0 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_per_class_scores_on_a_tiny_confusion() -> None:
    # true a a a b b c ; predicted a a b b c c
    truth = np.array([0, 0, 0, 1, 1, 2])
    result = classification_metrics(truth, one_hot([0, 0, 1, 1, 2, 2], confidence=0.8), LABELS)

    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (result["per_class"][name] for name in LABELS)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == (0.5, 0.5, 0.5, 2)
    assert (c["precision"], c["recall"], c["support"]) == (0.5, 1.0, 1)
    assert c["f1"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # Every confidence is 0.8 against accuracy 2/3, all in one bin.
    assert result["ece"] == pytest.approx(0.8 - 4 / 6)
    assert result["examples"] == 6
    assert result["labels"] == LABELS
    json.dumps(result)


def test_perfect_predictions() -> None:
    truth = np.array([0, 1, 2, 1])
    result = classification_metrics(truth, one_hot([0, 1, 2, 1]), LABELS)
    assert result["accuracy"] == result["macro_f1"] == 1.0
    assert result["ece"] == 0.0
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert all(
        s["precision"] == s["recall"] == s["f1"] == 1.0 for s in result["per_class"].values()
    )


def test_worst_predictions_and_unseen_labels_score_zero() -> None:
    truth = np.array([0, 0, 1, 1])
    result = classification_metrics(truth, one_hot([1, 1, 0, 0]), LABELS)
    assert result["accuracy"] == result["macro_f1"] == 0.0
    assert result["ece"] == 1.0
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["confusion_matrix"] == [[0, 2, 0], [2, 0, 0], [0, 0, 0]]


def test_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(np.array([0]), np.ones((1, 2)), LABELS)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([0, 1]), np.ones((1, 3)), LABELS)
    with pytest.raises(ValueError, match="indices"):
        classification_metrics(np.array([3]), np.ones((1, 3)) / 3, LABELS)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.ones((0, 3)), LABELS)
