"""The drift path without Faust: a labelled batch -> samples -> a model's window -> reports.

`batch_samples` runs in the classify agents (it projects embeddings with the version's reference
matrix, so only 32 numbers per message travel); `DriftMonitor.apply` runs in the drift agent,
on the table value of the sample's model, and returns the reports of the windows it closed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.drift import Thresholds
from worker.drift_report import build_report
from worker.pipeline import BatchResult
from worker.references import ReferenceStore
from worker.window import DriftState, Sample, WindowPolicy, encode_rows


def batch_samples(
    result: BatchResult, model: str, references: ReferenceStore, now: float
) -> list[Sample]:
    """One sample per served version in the batch; dead letters ride on the first one."""
    samples = []
    for version, observed in sorted(result.observed.items()):
        sample = Sample(
            kind="batch",
            model=model,
            sent_at=now,
            version=version,
            labels=observed.labels,
            predicted=observed.predicted,
            confidence=[round(c, 5) for c in observed.confidence],
            length=observed.length,
            first_ts=result.first_ts,
            last_ts=result.last_ts,
            role=observed.role,
            shadow_version=observed.shadow_version,
            shadow_agree=observed.shadow_agree,
            shadow_delta=observed.shadow_delta,
        )
        reference = references.get(model, version)
        if reference is not None and observed.embeddings:
            projected = reference.project(np.concatenate(observed.embeddings))
            sample.embedding, sample.dims = encode_rows(projected), projected.shape[1]
        samples.append(sample)
    for version, failed in sorted(result.candidate_failures.items()):
        canary = next((s for s in samples if s.version == version and s.role == "canary"), None)
        if canary is None:
            canary = Sample(kind="batch", model=model, sent_at=now, version=version, role="canary")
            samples.append(canary)
        canary.candidate_failures = failed
    if result.rejected:
        if not samples:
            samples.append(
                Sample(
                    kind="batch",
                    model=model,
                    sent_at=now,
                    first_ts=result.first_ts,
                    last_ts=result.last_ts,
                )
            )
        samples[0].dead_letters = result.rejected
    return samples


class DriftMonitor:
    """Advances one model's drift state by one sample and reports the windows that close."""

    def __init__(
        self,
        references: ReferenceStore,
        policy: WindowPolicy,
        thresholds: Thresholds,
        *,
        confidence_threshold: float = 0.5,
        permutations: int = 1000,
    ) -> None:
        self.references = references
        self.policy = policy
        self.thresholds = thresholds
        self.confidence_threshold = confidence_threshold
        self.permutations = permutations

    def apply(
        self,
        state: dict[str, Any] | None,
        sample: Sample,
        *,
        partition: int,
        offset: int,
        now: float,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the model's new table value, reports of the windows this sample closed)."""
        drift_state = (
            DriftState(model=sample.model) if state is None else DriftState.from_dict(state)
        )
        closed = drift_state.advance(
            sample, partition=partition, offset=offset, now=now, policy=self.policy
        )
        reports = [
            build_report(
                window,
                self.references.get(window.model, window.version),
                self.thresholds,
                closed_at=now,
                closed_by=reason,
                confidence_threshold=self.confidence_threshold,
                permutations=self.permutations,
            )
            for window, reason in closed
        ]
        return drift_state.to_dict(), reports
