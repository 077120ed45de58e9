"""One consumed batch in, the records to publish out: validate -> batch -> infer -> label.

Pure orchestration around an injected `Classifier`, so it is unit-tested without Kafka or Triton.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

import numpy as np
import structlog

from contracts.text import model_text
from worker.batching import chunks, halves, prepare_batch
from worker.failures import TOO_LARGE
from worker.inference import Classification, Classifier, InferenceRejected
from worker.labelling import (
    dead_letter_record,
    labelled_record,
    record_size,
    review_record,
    score_rows,
)
from worker.mapping import Mapping
from worker.messages import OutRecord, RawMessage
from worker.registry import ModelEntry, assign, shadow_version
from worker.schemas import InputMessage
from worker.settings import Route, WorkerSettings
from worker.validation import Rejection, validate

log = structlog.get_logger(__name__)

Item = tuple[int, RawMessage, InputMessage]


class Registry(Protocol):
    """Where the pipeline learns each model's active version and candidate."""

    def get(self, model: str) -> ModelEntry | None: ...

    async def ready(self) -> None: ...


@dataclass(slots=True)
class Observed:
    """What the drift monitor needs from the messages one served version labelled."""

    labels: list[str]
    role: str = "active"
    predicted: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    shadow_version: str | None = None
    shadow_agree: list[int] = field(default_factory=list)
    shadow_delta: list[float] = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    """Records to publish, in input order, and what one batch log line reports."""

    records: list[OutRecord]
    labelled: int = 0
    rejected: int = 0
    versions: set[str] = field(default_factory=set)
    inference_ms: float = 0.0
    observed: dict[str, Observed] = field(default_factory=dict)
    """Per served version; several only while a new version is being swapped in."""
    first_ts: float | None = None
    last_ts: float | None = None
    candidate_failures: dict[str, int] = field(default_factory=dict)
    """Per canary version: messages it failed on, which the active version labelled instead."""
    reviews: list[OutRecord] = field(default_factory=list)
    """Copies of labelled records under their route's review threshold (`review_record`)."""


class Pipeline:
    """Processes batches for one route."""

    def __init__(
        self,
        route: Route,
        classifier: Classifier,
        settings: WorkerSettings,
        registry: Registry | None = None,
    ) -> None:
        self.route = route
        self.classifier = classifier
        self.registry = registry
        self.deadletter_topic = settings.deadletter_topic
        self.review_topic = settings.review_topic
        self.max_request = settings.triton_batch
        self.max_record_bytes = settings.producer_max_request_bytes
        self.drop_headers = frozenset(settings.drop_headers)
        self.inject_failure_text = settings.inject_failure_text
        self._validate = partial(
            validate,
            max_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            mapping=Mapping(route),
        )

    async def process(self, raws: Sequence[RawMessage]) -> BatchResult:
        prepared = prepare_batch(raws, self._validate)
        slots: list[OutRecord | None] = [None] * prepared.size
        result = BatchResult(records=[])
        if raws:
            result.first_ts = min(raw.timestamp for raw in raws)
            result.last_ts = max(raw.timestamp for raw in raws)
        for index, raw, rejection in prepared.rejected:
            slots[index] = self._dead_letter(raw, rejection)
        started = time.perf_counter()
        entry = self.registry.get(self.route.model) if self.registry else None
        shadow = shadow_version(entry)
        for version, items in self._by_version(entry, prepared.valid).items():
            if entry is not None and version != entry.active:
                await self._canary(items, slots, result, entry, version)
            else:
                await self._classify(items, slots, result, version, shadow=shadow)
        result.inference_ms = (time.perf_counter() - started) * 1000.0
        result.records = [record for record in slots if record is not None]
        result.rejected = prepared.size - result.labelled
        if len(result.records) != prepared.size:
            raise AssertionError("every input must yield exactly one output record")
        return result

    def _by_version(
        self, entry: ModelEntry | None, items: Sequence[Item]
    ) -> dict[str | None, list[Item]]:
        """Items grouped by the version the registry routes them to (canary), in order."""
        versions = assign(entry, [message.id for _, _, message in items])
        groups: dict[str | None, list[Item]] = {}
        for item, version in zip(items, versions, strict=True):
            groups.setdefault(version, []).append(item)
        return groups

    async def _canary(
        self,
        items: Sequence[Item],
        slots: list[OutRecord | None],
        result: BatchResult,
        entry: ModelEntry,
        version: str,
    ) -> None:
        """Label with the candidate, once; whatever it fails on, the active version labels:
        a bad candidate costs latency, never a message."""
        try:
            await self._classify(items, slots, result, version, role="canary", retry=False)
        except Exception as exc:  # noqa: BLE001 - any candidate failure falls back
            remaining = [item for item in items if slots[item[0]] is None]
            result.candidate_failures[version] = result.candidate_failures.get(version, 0) + len(
                remaining
            )
            log.warning(
                "canary_failed",
                model=self.route.model,
                version=version,
                messages=len(remaining),
                error=str(exc),
            )
            await self._classify(remaining, slots, result, entry.active)

    async def _classify(
        self,
        items: Sequence[Item],
        slots: list[OutRecord | None],
        result: BatchResult,
        version: str | None = None,
        *,
        role: str = "active",
        retry: bool = True,
        shadow: str | None = None,
    ) -> None:
        """Classify `items` in Triton requests of at most `max_request` texts, all sent at once,
        and label them in input order. A request that fails leaves its items unlabelled (the
        canary's fallback takes them) and raises once the others are labelled."""
        requests = [self._answers(part, version, retry) for part in chunks(items, self.max_request)]
        failure: BaseException | None = None
        for outcome in await asyncio.gather(*requests, return_exceptions=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                continue
            for part, texts, answer in outcome:
                if isinstance(answer, Rejection):
                    slots[part[0][0]] = self._dead_letter(part[0][1], answer)
                else:
                    await self._label(part, texts, answer, slots, result, role, shadow)
        if failure is not None:
            raise failure

    async def _answers(
        self, items: Sequence[Item], version: str | None, retry: bool
    ) -> list[tuple[Sequence[Item], list[str], Classification | Rejection]]:
        """Triton's answer for one request; when Triton rejects it as invalid, bisect until the
        culprit is alone, and its answer is the rejection."""
        texts = [model_text(m.text, m.title) for _, _, m in items]
        self._injected_failure(texts)
        try:
            answer = await self.classifier.classify(self.route.model, texts, version, retry=retry)
        except InferenceRejected as exc:
            if len(items) == 1:
                return [(items, texts, Rejection("inference_rejected", str(exc)))]
            first, second = halves(items)
            return [
                *await self._answers(first, version, retry),
                *await self._answers(second, version, retry),
            ]
        return [(items, texts, answer)]

    async def _label(
        self,
        items: Sequence[Item],
        texts: list[str],
        answer: Classification,
        slots: list[OutRecord | None],
        result: BatchResult,
        role: str,
        shadow: str | None,
    ) -> None:
        """The labelled records of one answer, and what the drift monitor observes of it."""
        now = datetime.now(UTC)
        result.versions.add(answer.version)
        observed = result.observed.setdefault(
            answer.version, Observed(labels=answer.labels, role=role)
        )
        predicted = np.argmax(answer.probs, axis=1)
        confidence = answer.probs[np.arange(len(items)), predicted]
        best, best_probs = predicted.tolist(), confidence.tolist()
        observed.predicted.extend(best)
        observed.confidence.extend(best_probs)
        observed.length.extend(len(text) for text in texts)
        if answer.embeddings is not None:
            observed.embeddings.append(answer.embeddings)
        if shadow is not None:
            await self._compare_shadow(shadow, texts, answer, predicted, confidence, observed)
        values, rounded = score_rows(answer.probs)
        reviewing = self.route.reviews
        rows = zip(items, values, rounded, best, best_probs, strict=True)
        for (index, raw, message), probs, scores, top, top_prob in rows:
            record = labelled_record(
                raw,
                message,
                sink=self.route.sink,
                model=answer.model,
                version=answer.version,
                labels=answer.labels,
                probs=probs,
                scores=scores,
                now=now,
                drop_headers=self.drop_headers,
            )
            if record_size(record.key, record.value, record.headers) > self.max_record_bytes:
                size = len(record.value)
                detail = f"labelled record of {size} bytes > PRODUCER_MAX_REQUEST_BYTES"
                slots[index] = self._dead_letter(raw, Rejection("processing_error", detail))
                continue
            slots[index] = record
            result.labelled += 1
            if reviewing:
                self._maybe_review(raw, message, answer, top, top_prob, scores, now, result)

    def _maybe_review(
        self,
        raw: RawMessage,
        message: InputMessage,
        answer: Classification,
        best: int,
        confidence: float,
        scores: list[float],
        now: datetime,
        result: BatchResult,
    ) -> None:
        """Copy the record to review when its confidence is under its label's threshold."""
        label = answer.labels[best]
        threshold = self.route.review_threshold(label)
        if threshold is None or confidence >= threshold:
            return
        result.reviews.append(
            review_record(
                message,
                topic=self.review_topic,
                route=self.route.source,
                model=answer.model,
                version=answer.version,
                label=label,
                confidence=confidence,
                scores=dict(zip(answer.labels, scores, strict=True)),
                now=now,
                origin=raw,
            )
        )

    def _injected_failure(self, texts: list[str]) -> None:
        """The test seam `INJECT_FAILURE_TEXT`: fail like a bug would, inside the pipeline."""
        marker = self.inject_failure_text
        if marker and any(marker in text for text in texts):
            raise RuntimeError(f"injected failure: a text contains {marker!r}")

    async def _compare_shadow(
        self,
        shadow: str,
        texts: list[str],
        answer: Classification,
        predicted: np.ndarray,
        confidence: np.ndarray,
        observed: Observed,
    ) -> None:
        """Ask the shadow version too (once, no retry) and record where it agrees."""
        observed.shadow_version = shadow
        try:
            other = await self.classifier.classify(self.route.model, texts, shadow, retry=False)
        except Exception as exc:  # noqa: BLE001 - a failing shadow never affects the output
            log.warning("shadow_failed", model=self.route.model, version=shadow, error=str(exc))
            observed.shadow_agree.extend([-1] * len(texts))
            observed.shadow_delta.extend([0.0] * len(texts))
            return
        theirs = np.argmax(other.probs, axis=1)
        their_confidence = other.probs[np.arange(len(texts)), theirs]
        for mine, their, ours, their_conf in zip(
            predicted, theirs, confidence, their_confidence, strict=True
        ):
            observed.shadow_agree.append(int(answer.labels[mine] == other.labels[their]))
            observed.shadow_delta.append(round(float(their_conf - ours), 5))

    def _dead_letter(
        self, raw: RawMessage, rejection: Rejection, max_bytes: int | None = None
    ) -> OutRecord:
        return dead_letter_record(
            raw,
            rejection,
            topic=self.deadletter_topic,
            now=datetime.now(UTC),
            max_bytes=max_bytes or self.max_record_bytes,
            drop_headers=self.drop_headers,
        )

    def refused(self, record: OutRecord, exc: BaseException) -> OutRecord | None:
        """What replaces a record that Kafka refused for good: its input's dead letter, cut to
        half the request limit (the broker's own limit may be below ours). None (send it
        again) for a record with no input, and for a dead letter refused for another reason
        than its size: the dead-letter topic itself is broken, and nothing may be dropped."""
        if record.origin is None:
            return None
        if record.topic == self.deadletter_topic and not isinstance(exc, TOO_LARGE):
            return None
        detail = f"Kafka refused the {len(record.value)}-byte record for {record.topic}: {exc!r}"
        rejection = Rejection("processing_error", detail)
        return self._dead_letter(record.origin, rejection, self.max_record_bytes // 2)

    def failed(self, raw: RawMessage, exc: BaseException) -> BatchResult:
        """The outcome of one message that processing failed on: a `processing_error` dead
        letter with the exception's type and message."""
        detail = f"{type(exc).__name__}: {exc}"[:2000]
        record = self._dead_letter(raw, Rejection("processing_error", detail))
        return BatchResult(
            records=[record], rejected=1, first_ts=raw.timestamp, last_ts=raw.timestamp
        )
