"""One consumed batch in, the records to publish out: validate -> batch -> infer -> label.

Pure orchestration around an injected `Classifier`, so it is unit-tested without Kafka or Triton.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np

from worker.batching import chunks, halves, prepare_batch
from worker.inference import Classifier, InferenceRejected
from worker.labelling import dead_letter_record, labelled_record
from worker.messages import OutRecord, RawMessage
from worker.schemas import InputMessage, model_text
from worker.settings import Route, WorkerSettings
from worker.validation import Rejection, validate

Item = tuple[int, RawMessage, InputMessage]


@dataclass(slots=True)
class Observed:
    """What the drift monitor needs from the messages one served version labelled."""

    labels: list[str]
    predicted: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)


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


class Pipeline:
    """Processes batches for one route."""

    def __init__(self, route: Route, classifier: Classifier, settings: WorkerSettings) -> None:
        self.route = route
        self.classifier = classifier
        self.deadletter_topic = settings.deadletter_topic
        self.max_request = settings.max_batch
        self._validate = partial(
            validate, max_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars
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
        for chunk in chunks(prepared.valid, self.max_request):
            await self._classify(chunk, slots, result)
        result.inference_ms = (time.perf_counter() - started) * 1000.0
        result.records = [record for record in slots if record is not None]
        result.rejected = prepared.size - result.labelled
        if len(result.records) != prepared.size:
            raise AssertionError("every input must yield exactly one output record")
        return result

    async def _classify(
        self, items: Sequence[Item], slots: list[OutRecord | None], result: BatchResult
    ) -> None:
        """Classify `items`; when Triton rejects the batch as invalid, bisect to the culprit."""
        try:
            texts = [model_text(m.text, m.title) for _, _, m in items]
            answer = await self.classifier.classify(self.route.model, texts)
        except InferenceRejected as exc:
            if len(items) == 1:
                index, raw, _ = items[0]
                slots[index] = self._dead_letter(raw, Rejection("inference_rejected", str(exc)))
                return
            for half in halves(items):
                await self._classify(half, slots, result)
            return
        now = datetime.now(UTC)
        result.versions.add(answer.version)
        observed = result.observed.setdefault(answer.version, Observed(labels=answer.labels))
        predicted = np.argmax(answer.probs, axis=1)
        observed.predicted.extend(predicted.tolist())
        observed.confidence.extend(answer.probs[np.arange(len(items)), predicted].tolist())
        observed.length.extend(len(text) for text in texts)
        if answer.embeddings is not None:
            observed.embeddings.append(answer.embeddings)
        for (index, raw, message), probs in zip(items, answer.probs, strict=True):
            slots[index] = labelled_record(
                raw,
                message,
                sink=self.route.sink,
                model=answer.model,
                version=answer.version,
                labels=answer.labels,
                probs=probs,
                now=now,
            )
            result.labelled += 1

    def _dead_letter(self, raw: RawMessage, rejection: Rejection) -> OutRecord:
        now = datetime.now(UTC)
        return dead_letter_record(raw, rejection, topic=self.deadletter_topic, now=now)
