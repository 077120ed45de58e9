"""The drift path without Faust: a labelled batch -> samples -> a model's window -> reports.

`sample_records` runs in the classify agents (`batch_samples` projects embeddings with the
version's reference matrix, so only 32 numbers per message travel). `DriftFlow.take` is the
drift agent's body for one sample: `DriftMonitor.apply` advances the model's window in the
table, and the reports of the windows it closed are published, checked by the rollout guard
and counted. One partition owner per model means one report per model and window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

import numpy as np
import orjson
import structlog

from worker import metrics
from worker.drift import Thresholds
from worker.drift_report import build_report, feedback_section
from worker.messages import OutRecord
from worker.pipeline import BatchResult
from worker.publishing import SendAll, publish
from worker.references import ReferenceStore
from worker.rollout_guard import RolloutGuard
from worker.settings import DriftSettings
from worker.window import DriftState, Sample, WindowPolicy, encode_rows

log = structlog.get_logger(__name__)


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


def sample_record(topic: str, sample: Sample) -> OutRecord:
    return OutRecord(topic, sample.model.encode("utf-8"), orjson.dumps(sample.to_dict()))


def sample_records(
    result: BatchResult, *, topic: str, model: str, references: ReferenceStore
) -> list[OutRecord]:
    """What a classified batch publishes besides its records: its drift samples."""
    found = batch_samples(result, model, references, time.time())
    return [sample_record(topic, sample) for sample in found]


class DriftMonitor:
    """Advances one model's drift state by one sample and reports the windows that close."""

    @classmethod
    def from_settings(cls, references: ReferenceStore, drift: DriftSettings) -> DriftMonitor:
        return cls(
            references,
            WindowPolicy(
                max_seconds=drift.window_s,
                max_messages=drift.window_messages,
                sample_size=drift.embedding_sample,
            ),
            Thresholds(
                psi_warn=drift.psi_warn,
                psi_drift=drift.psi_drift,
                ks_warn=drift.ks_warn,
                ks_drift=drift.ks_drift,
                mmd_warn=drift.mmd_warn,
                mmd_drift=drift.mmd_drift,
                deadletter_warn=drift.deadletter_warn,
                deadletter_drift=drift.deadletter_drift,
                alpha=drift.alpha,
            ),
            confidence_threshold=drift.confidence_threshold,
            permutations=drift.permutations,
        )

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
        if reports and drift_state.feedback:
            reports[0]["feedback"] = feedback_section(drift_state.take_feedback())
        return drift_state.to_dict(), reports


class Delivered(Protocol):
    """What the drift agent needs of a consumed sample (a Faust `Message`)."""

    value: bytes
    partition: int
    offset: int


class DriftFlow:
    """The drift agent's body: one sample in, its model's window advanced in `table`, the
    reports of closed windows out (published, then checked by the rollout guard)."""

    def __init__(
        self,
        monitor: DriftMonitor,
        table: MutableMapping[str, Any],
        send_all: SendAll,
        report_topic: str,
        guard: RolloutGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.monitor = monitor
        self.table = table
        self.send_all = send_all
        self.report_topic = report_topic
        self.guard = guard
        self.clock = clock

    async def take(self, message: Delivered) -> list[dict[str, Any]]:
        """Apply one sample; returns the reports of the windows it closed."""
        sample = Sample.from_dict(orjson.loads(message.value))
        state, closed = self.monitor.apply(
            self.table.get(sample.model),
            sample,
            partition=message.partition,
            offset=message.offset,
            now=self.clock(),
        )
        if closed:
            records = [
                OutRecord(self.report_topic, sample.model.encode(), orjson.dumps(report))
                for report in closed
            ]
            await publish(records, self.send_all)
            for report in closed:
                await self._after(report)
        self.table[sample.model] = state
        return closed

    async def _after(self, report: dict[str, Any]) -> None:
        if self.guard is not None:
            await self.guard.check(report)
        metrics.observe_drift(report)
        log.info(
            "drift_report",
            model=report["model"]["name"],
            version=report["model"]["version"],
            window=report["window"]["id"],
            messages=report["messages"],
            label_psi=(report.get("labels") or {}).get("psi"),
            mmd2=(report.get("embedding") or {}).get("mmd2"),
            status=report["status"],
            reasons=report["reasons"],
        )
