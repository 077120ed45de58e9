"""Drift reports built from windows and a reference written by the trainer's own code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.reference import reference_statistics
from worker.drift import Thresholds
from worker.drift_report import build_report, rebin
from worker.references import Reference, ReferenceStore, parse_reference
from worker.window import Sample, Window, encode_rows

LABELS = ["World", "Sports", "Business"]
DIM = 12


def make_data(rng: np.random.Generator, n: int, label_p, shift: float = 0.0, length=(80, 400)):
    predicted = rng.choice(len(LABELS), size=n, p=label_p)
    probs = np.full((n, len(LABELS)), 0.05)
    probs[np.arange(n), predicted] = rng.uniform(0.6, 0.9, size=n)
    probs /= probs.sum(axis=1, keepdims=True)
    embeddings = rng.standard_normal((n, DIM)) + shift
    lengths = rng.integers(*length, size=n)
    return predicted, probs, embeddings, lengths


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(1)
    predicted, probs, embeddings, lengths = make_data(rng, 800, [1 / 3] * 3)
    texts = ["x" * int(n) for n in lengths]
    stats = reference_statistics(predicted, probs, texts, embeddings, LABELS, seed=7)
    return parse_reference("news", "3", stats)


def window_of(reference: Reference, seed: int, n=300, label_p=(1 / 3,) * 3, **kw) -> Window:
    rng = np.random.default_rng(seed)
    predicted, probs, embeddings, lengths = make_data(rng, n, list(label_p), **kw)
    projected = reference.project(embeddings)
    window = Window.open("news", 1000.0)
    window.add(
        Sample(
            kind="batch",
            model="news",
            sent_at=1000.0,
            version="3",
            labels=LABELS,
            predicted=predicted.tolist(),
            confidence=probs.max(axis=1).tolist(),
            length=lengths.tolist(),
            embedding=encode_rows(projected),
            dims=projected.shape[1],
        ),
        sample_size=256,
    )
    return window


def report(window: Window, reference: Reference | None, **kw) -> dict:
    return build_report(
        window, reference, Thresholds(alpha=0.001), closed_at=1060.0, closed_by="time", **kw
    )


def test_window_like_the_reference_is_ok(reference: Reference) -> None:
    out = report(window_of(reference, seed=2), reference)
    assert out["status"] == "ok", out["reasons"]
    assert out["messages"] == 300 and out["labelled"] == 300
    assert out["labels"]["psi"] < 0.1
    assert out["embedding"]["mmd_p"] > 0.001
    assert out["embedding"]["window_rows"] == 256
    assert 0.0 < out["confidence"]["p10"] < out["confidence"]["p50"] < out["confidence"]["p90"]
    assert out["confidence"]["share_below"] == 0.0  # every max-probability is above 0.5
    assert out["window"]["start"].startswith("1970-01-01T00:16:40")
    assert out["model"] == {
        "name": "news",
        "version": "3",
        "previous_version": None,
        "version_changed": False,
    }


def test_one_class_stream_is_drift(reference: Reference) -> None:
    out = report(window_of(reference, seed=3, label_p=(0.0, 1.0, 0.0)), reference)
    assert out["status"] == "drift"
    assert any("predicted-label PSI" in reason for reason in out["reasons"])
    assert out["labels"]["fractions"] == [0.0, 1.0, 0.0]
    assert out["labels"]["js_distance"] > 0.5


def test_other_domain_is_drift_by_embedding_and_length(reference: Reference) -> None:
    out = report(window_of(reference, seed=4, shift=1.5, length=(10, 60)), reference)
    assert out["status"] == "drift"
    reasons = " ".join(out["reasons"])
    assert "embedding MMD" in reasons and "text-length PSI" in reasons
    assert out["text_length"]["mean"] < out["text_length"]["reference_mean"]


def test_no_reference_warns_but_still_counts(reference: Reference) -> None:
    out = report(window_of(reference, seed=5), None)
    assert out["status"] == "warn"
    assert out["reasons"] == ["warn: no reference statistics for version 3"]
    assert out["labelled"] == 300 and "psi" not in out["labels"]


def test_dead_letter_rate_and_version_change_are_reported(reference: Reference) -> None:
    window = window_of(reference, seed=6, n=100)
    window.dead_letters = 100
    window.previous_version = "2"
    out = report(window, reference)
    assert out["dead_letter_rate"] == 0.5
    assert out["status"] == "drift"
    assert "drift: dead-letter rate 50.0%" in out["reasons"]
    assert out["model"]["version_changed"] is True
    assert any(r.startswith("info: served version changed 2 -> 3") for r in out["reasons"])


def test_rebin_moves_fine_bins_into_coarse_ones() -> None:
    fine = np.array([1, 2, 3, 4])
    out = rebin(fine, np.array([0, 0.25, 0.5, 0.75, 1.0]), np.array([0, 0.5, 1.0]))
    assert out.tolist() == [3, 7]


def test_reference_store_tolerates_missing_and_foreign_files(tmp_path) -> None:
    store = ReferenceStore(tmp_path)
    assert store.get("news", "1") is None
    assert store.get("news", None) is None
    (tmp_path / "news" / "2").mkdir(parents=True)
    (tmp_path / "news" / "2" / "reference.json").write_text('{"format": "other"}')
    assert store.get("news", "2") is None


def reference_stats() -> dict:
    """A reference.json as the trainer writes it (small: 60 rows)."""
    predicted, probs, embeddings, lengths = make_data(np.random.default_rng(2), 60, [1 / 3] * 3)
    texts = ["x" * int(n) for n in lengths]
    return reference_statistics(predicted, probs, texts, embeddings, LABELS, seed=7)


def test_a_reference_binned_at_other_length_edges_is_refused_not_half_compared(tmp_path) -> None:
    stats = reference_stats()
    edges = stats["text_length"]["edges"]
    stats["text_length"]["edges"] = [edge * 2 for edge in edges]
    with pytest.raises(ValueError, match="text length"):
        parse_reference("news", "4", stats)
    version_dir = tmp_path / "news" / "4"
    version_dir.mkdir(parents=True)
    (version_dir / "reference.json").write_text(json.dumps(stats))
    assert ReferenceStore(tmp_path).get("news", "4") is None


@pytest.mark.parametrize(
    ("part", "value", "refusal"),
    [
        ("method", "orthogonal", "projection method"),
        ("matrix_sha256", "0" * 64, "different projection matrix"),
    ],
)
def test_a_reference_projected_otherwise_is_refused(part: str, value: str, refusal: str) -> None:
    stats = reference_stats()
    stats["embedding"]["projection"][part] = value
    with pytest.raises(ValueError, match=refusal):
        parse_reference("news", "4", stats)


def test_shadow_and_canary_sections(reference: Reference) -> None:
    window = window_of(reference, seed=8, n=10)
    window.role = "canary"
    window.candidate_failures = 2
    window.shadow_version = "4"
    window.shadow_compared, window.shadow_agreed, window.shadow_failed = 8, 6, 2
    window.shadow_class_compared, window.shadow_class_agreed = [4, 4, 0], [4, 2, 0]
    window.shadow_delta_sum = -0.4
    out = report(window, reference)
    assert out["window"]["role"] == "canary"
    assert out["candidate_failures"] == 2 and out["candidate_failure_rate"] == round(2 / 12, 6)
    assert out["shadow"] == {
        "version": "4",
        "compared": 8,
        "failed": 2,
        "agreement": 0.75,
        "per_class_agreement": {"World": 1.0, "Sports": 0.5, "Business": None},
        "confidence_delta_mean": -0.05,
    }
