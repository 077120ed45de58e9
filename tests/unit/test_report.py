"""report.md and confusion_matrix.png for a model version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.metrics import classification_metrics
from trainer.report import CONFUSION_FILE, REPORT_FILE, render_report, write_report

LABELS = ["World", "Sports", "Business|Money"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
META = {
    "model_name": "news",
    "version": 3,
    "created_at": "2026-01-01T00:00:00+00:00",
    "base_model": "all-MiniLM-L6-v2",
    "data_fingerprint": "sha256:abc123",
}


def scores(predicted: list[int], confidence: float) -> dict:
    truth = np.array([0, 0, 1, 1, 2, 2])
    probs = np.full((6, 3), (1 - confidence) / 2)
    probs[np.arange(6), predicted] = confidence
    return classification_metrics(truth, probs, LABELS)


MODEL = scores([0, 0, 1, 1, 2, 1], 0.9)
BASELINE = {**scores([0, 1, 1, 1, 2, 0], 0.7), "fit_seconds": 0.5, "train_examples": 100}


def test_writes_markdown_and_png(tmp_path: Path) -> None:
    write_report(tmp_path, MODEL, BASELINE, None, META)

    report = (tmp_path / REPORT_FILE).read_text(encoding="utf-8")
    assert report.startswith("# Evaluation report: news v3")
    for text in ("sha256:abc123", "all-MiniLM-L6-v2", "2026-01-01T00:00:00+00:00"):
        assert text in report
    # Accuracy 5/6 against 4/6: a margin of +16.67 points.
    assert "Margin over the classical baseline: **+16.67 pts**" in report
    assert "## Per class" in report and "## Confusion matrix" in report
    assert "Business\\|Money" in report
    assert "| **Sports** | 0 | 2 | 0 |" in report
    assert "ECE" in report and f"{MODEL['ece']:.4f}" in report
    assert "## Variants" not in report

    png = (tmp_path / CONFUSION_FILE).read_bytes()
    assert png.startswith(PNG_MAGIC)


def test_report_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_report(first, MODEL, BASELINE, None, META)
    write_report(second, MODEL, BASELINE, None, META)
    for name in (REPORT_FILE, CONFUSION_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_variants_show_accuracy_and_speed_change() -> None:
    variants = {
        "fp32": {
            "accuracy": MODEL["accuracy"],
            "macro_f1": MODEL["macro_f1"],
            "texts_per_s": 100.0,
        },
        "int8": {
            "accuracy": MODEL["accuracy"] - 0.01,
            "macro_f1": MODEL["macro_f1"],
            "texts_per_s": 250.0,
            "size_mb": 23.5,
        },
    }
    report = render_report(MODEL, None, variants, META)
    assert "## Variants" in report
    int8_row = next(line for line in report.splitlines() if line.startswith("| int8 "))
    assert "-1.00 pts" in int8_row and "2.50×" in int8_row and "23.5" in int8_row
    assert "No baseline was scored" in report


def test_a_hybrid_version_shows_the_blend_beside_both_models() -> None:
    hybrid = {
        "weight": 0.7,
        "setup": "word and char TF-IDF",
        "weight_chosen_by": "training rows only",
        "transformer": {"accuracy": 0.5, "macro_f1": 0.4, "ece": 0.1},
        "tfidf": {"accuracy": 0.25, "macro_f1": 0.2, "ece": 0.3},
    }

    report = render_report({**MODEL, "hybrid": hybrid}, BASELINE, None, META)
    plain = render_report(MODEL, BASELINE, None, META)

    assert "## Hybrid" not in plain
    section = report.split("## Hybrid", 1)[1]
    assert "0.70 × transformer + 0.30 × TF-IDF (word and char TF-IDF)" in section
    assert "| transformer | 0.5000 | 0.4000 | 0.1000 |" in section
    assert "| TF-IDF | 0.2500 | 0.2000 | 0.3000 |" in section
    assert f"| blend (served) | {MODEL['accuracy']:.4f} |" in section
