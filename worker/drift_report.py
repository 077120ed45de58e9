"""The drift report of a closed window: every figure, compared with the version's reference.

A pure function of a `Window`, its version's `Reference` and the thresholds, so each figure
and the status rules are unit-tested without Kafka. The report is what `labelstream.drift`
carries (key = model name); `window.id` makes a report replayed after a crash recognisable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from contracts.reference import bin_counts
from worker import drift
from worker.drift import Assessment, Thresholds
from worker.references import Reference
from worker.window import CONFIDENCE_EDGES, Window

REPORT_FORMAT = "labelstream.drift/1"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def rebin(counts: np.ndarray, edges: np.ndarray, new_edges: np.ndarray) -> np.ndarray:
    """Move each bin's count into the coarser bin holding its centre."""
    centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2.0
    return bin_counts(centres, new_edges, weights=counts)


def _judge(
    verdict: Assessment,
    value: float,
    warn: float,
    drift_at: float,
    p_value: float,
    alpha: float,
    reason: str,
) -> None:
    """Raise the verdict when the figure's effect size and its test both say so."""
    status = drift.grade(value, warn, drift_at, p_value, alpha)
    if status != "ok":
        verdict.raise_to(status, reason)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _labels(window: Window, ref: Reference | None, limits: Thresholds, verdict: Assessment):
    counts = np.asarray(window.label_counts, float)
    section: dict[str, Any] = {
        "names": window.labels,
        "counts": window.label_counts,
        "fractions": [_round(f) for f in counts / counts.sum()],
    }
    if ref is None or ref.labels != window.labels:
        return section
    psi = drift.psi(ref.label_counts, counts)
    p_value = drift.chi_square_p(ref.label_counts, counts)
    section.update(
        reference_fractions=[_round(f) for f in ref.label_counts / ref.label_counts.sum()],
        psi=_round(psi),
        js_distance=_round(drift.js_distance(ref.label_counts, counts)),
        chi2_p=_round(p_value, 12),
    )
    _judge(
        verdict,
        psi,
        limits.psi_warn,
        limits.psi_drift,
        p_value,
        limits.alpha,
        f"predicted-label PSI {psi:.3f} (chi-square p={p_value:.2g})",
    )
    return section


def _confidence(
    window: Window,
    ref: Reference | None,
    limits: Thresholds,
    verdict: Assessment,
    threshold: float,
):
    counts = np.asarray(window.confidence_counts, float)
    edges = np.asarray(CONFIDENCE_EDGES)
    p10, p50, p90 = drift.histogram_quantiles(counts, edges, (0.1, 0.5, 0.9))
    below = counts[: int(np.searchsorted(edges, threshold, side="left"))].sum() / counts.sum()
    section: dict[str, Any] = {
        "mean": _round(window.confidence_sum / window.labelled),
        "p10": _round(p10, 3),
        "p50": _round(p50, 3),
        "p90": _round(p90, 3),
        "threshold": threshold,
        "share_below": _round(below),
    }
    if ref is None:
        return section
    binned = rebin(counts, edges, ref.confidence_edges)
    distance, p_value = drift.ks_binned(ref.confidence_counts, binned)
    section.update(
        reference_mean=_round(ref.confidence_mean), ks_distance=_round(distance), ks_p=p_value
    )
    _judge(
        verdict,
        distance,
        limits.ks_warn,
        limits.ks_drift,
        p_value,
        limits.alpha,
        f"confidence KS distance {distance:.3f} (p={p_value:.2g})",
    )
    return section


def _length(window: Window, ref: Reference | None, limits: Thresholds, verdict: Assessment):
    counts = np.asarray(window.length_counts, float)
    section: dict[str, Any] = {
        "unit": "characters",
        "mean": _round(window.length_sum / window.labelled, 2),
        "edges": window.length_edges,
        "counts": window.length_counts,
    }
    if ref is None or not np.array_equal(ref.length_edges, window.length_edges):
        return section
    psi = drift.psi(ref.length_counts, counts)
    p_value = drift.chi_square_p(ref.length_counts, counts)
    section.update(reference_mean=_round(ref.length_mean, 2), psi=_round(psi), chi2_p=p_value)
    _judge(
        verdict,
        psi,
        limits.psi_warn,
        limits.psi_drift,
        p_value,
        limits.alpha,
        f"text-length PSI {psi:.3f} (chi-square p={p_value:.2g})",
    )
    return section


MMD_STOP_AFTER = 20
"""The MMD test stops at this many re-splits reaching the observed MMD² (a sequential p-value,
see `drift.rbf_mmd`): a window like its reference costs ~40 re-splits, not all of them, and a
p-value near DRIFT_ALPHA still comes from every re-split."""


def _embedding(
    window: Window,
    ref: Reference | None,
    limits: Thresholds,
    verdict: Assessment,
    permutations: int,
):
    rows = window.embedding_rows()
    section: dict[str, Any] = {"window_rows": len(rows), "seen": window.embedding_seen}
    if ref is None or len(rows) < 2 or len(ref.sample) < 2 or ref.bandwidth <= 0:
        return section
    if rows.shape[1] != ref.sample.shape[1]:
        return section
    mmd2, p_value = drift.rbf_mmd(
        ref.sample,
        rows,
        ref.bandwidth,
        permutations=permutations,
        seed=len(rows),
        stop_after=MMD_STOP_AFTER,
    )
    section.update(reference_rows=len(ref.sample), mmd2=_round(mmd2), mmd_p=_round(p_value))
    _judge(
        verdict,
        mmd2,
        limits.mmd_warn,
        limits.mmd_drift,
        p_value,
        limits.alpha,
        f"embedding MMD² {mmd2:.4f} (permutation p={p_value:.2g})",
    )
    return section


def wilson_interval(agreed: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: sound at small counts and at 0 or 1,
    where the normal approximation gives intervals outside [0, 1]."""
    if total == 0:
        return 0.0, 1.0
    p = agreed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def feedback_section(pending: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per version: people's corrections of its labels, its live accuracy on them (with a
    95 % interval) and the confusion matrix (rows: predicted, columns: the person's label)."""
    section = {}
    for version, entry in sorted(pending.items()):
        confusion = np.asarray(entry["confusion"], dtype=np.int64)
        total, agreed = int(confusion.sum()), int(np.trace(confusion))
        low, high = wilson_interval(agreed, total)
        section[version] = {
            "corrections": total,
            "agreed": agreed,
            "accuracy": _round(agreed / total) if total else None,
            "ci95": [_round(low), _round(high)],
            "labels": entry["labels"],
            "confusion": confusion.tolist(),
        }
    return section


def shadow_section(window: Window) -> dict[str, Any]:
    """How often the shadow version agreed with the published labels, overall and per class."""
    compared = window.shadow_compared
    per_class = {
        label: (None if n == 0 else _round(agreed / n))
        for label, n, agreed in zip(
            window.labels, window.shadow_class_compared, window.shadow_class_agreed, strict=False
        )
    }
    return {
        "version": window.shadow_version,
        "compared": compared,
        "failed": window.shadow_failed,
        "agreement": None if compared == 0 else _round(window.shadow_agreed / compared),
        "per_class_agreement": per_class,
        "confidence_delta_mean": None
        if compared == 0
        else _round(window.shadow_delta_sum / compared),
    }


def build_report(
    window: Window,
    reference: Reference | None,
    thresholds: Thresholds,
    *,
    closed_at: float,
    closed_by: str,
    confidence_threshold: float = 0.5,
    permutations: int = 1000,
) -> dict[str, Any]:
    """The JSON-ready report of `window` (see the README for every figure)."""
    verdict = Assessment()
    rate = window.dead_letters / window.messages if window.messages else 0.0
    if rate >= thresholds.deadletter_drift:
        verdict.raise_to("drift", f"dead-letter rate {rate:.1%}")
    elif rate >= thresholds.deadletter_warn:
        verdict.raise_to("warn", f"dead-letter rate {rate:.1%}")
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "window": {
            "id": window.window_id,
            "start": _iso(window.opened_at),
            "end": _iso(closed_at),
            "closed_by": closed_by,
            "role": window.role,
            "first_message_ts": _iso(window.first_ts),
            "last_message_ts": _iso(window.last_ts),
        },
        "model": {
            "name": window.model,
            "version": window.version,
            "previous_version": window.previous_version,
            "version_changed": window.previous_version is not None,
        },
        "messages": window.messages,
        "labelled": window.labelled,
        "dead_letters": window.dead_letters,
        "dead_letter_rate": _round(rate),
        "reference": None if reference is None else {"version": reference.version},
    }
    if window.role == "canary":
        report["candidate_failures"] = window.candidate_failures
        report["candidate_failure_rate"] = _round(
            window.candidate_failures / window.messages if window.messages else 0.0
        )
    if window.shadow_version is not None:
        report["shadow"] = shadow_section(window)
    if window.previous_version is not None:
        verdict.reasons.append(
            f"info: served version changed {window.previous_version} -> {window.version}; "
            "compared with the new version's reference"
        )
    if window.labelled:
        if reference is None:
            verdict.raise_to("warn", f"no reference statistics for version {window.version}")
        report["labels"] = _labels(window, reference, thresholds, verdict)
        report["confidence"] = _confidence(
            window, reference, thresholds, verdict, confidence_threshold
        )
        report["text_length"] = _length(window, reference, thresholds, verdict)
        report["embedding"] = _embedding(window, reference, thresholds, verdict, permutations)
    report["status"] = verdict.status
    report["reasons"] = verdict.reasons
    return report
