"""The TF-IDF + logistic-regression baseline is scored like the model."""

from __future__ import annotations

import json
import random

import pytest

from trainer.baseline import tfidf_baseline

LABELS = ["sport", "money", "unused"]
WORDS = {
    0: ["goal", "match", "striker", "league", "referee", "penalty"],
    1: ["bank", "shares", "profit", "market", "interest", "investor"],
}


def synthetic(count: int, seed: int) -> tuple[list[str], list[int]]:
    """Two classes with disjoint vocabularies: trivially separable."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(count)]
    texts = [" ".join(rng.choices(WORDS[label], k=5)) for label in labels]
    return texts, labels


def test_separable_data_is_classified_perfectly() -> None:
    train_texts, train_labels = synthetic(60, seed=1)
    eval_texts, eval_labels = synthetic(20, seed=2)
    result = tfidf_baseline(train_texts, train_labels, eval_texts, eval_labels, LABELS, seed=42)

    assert result["accuracy"] == 1.0
    for key in (
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "ece",
        "reliability",
        "examples",
        "fit_seconds",
        "train_examples",
        "setup",
    ):
        assert key in result, key
    assert set(result["per_class"]) == set(LABELS)
    # A label absent from training still gets a row and a column, scored 0.
    assert result["per_class"]["unused"]["support"] == 0
    assert len(result["confusion_matrix"]) == 3
    assert result["examples"] == 20 and result["train_examples"] == 60
    json.dumps(result)


def test_fit_seconds_is_the_time_between_the_clock_readings_around_the_fit() -> None:
    texts, labels = synthetic(20, seed=1)
    ticks = iter([100.0, 102.25])  # before the fit, after it: 2.25 s on a fake clock
    result = tfidf_baseline(texts, labels, texts, labels, LABELS, seed=42, clock=ticks.__next__)
    assert result["fit_seconds"] == 2.25


def test_rejects_unusable_inputs() -> None:
    texts, labels = synthetic(10, seed=1)
    with pytest.raises(ValueError):
        tfidf_baseline(texts, labels[:-1], texts, labels, LABELS, seed=42)
    with pytest.raises(ValueError):
        tfidf_baseline(texts, [0] * 10, texts, labels, LABELS, seed=42)
    with pytest.raises(ValueError):
        tfidf_baseline(texts, labels, [], [], LABELS, seed=42)
