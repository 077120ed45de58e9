"""People's corrections joined to the predictions they correct, for live accuracy.

One agent consumes the review topic and the feedback topic together (both keyed by message id,
with the same partitions, so an id's review and its feedback land on one worker). A review is
remembered in the `review-predictions` table: id -> the version, its label, the model's labels
and a hash of the text. A feedback record is validated like input (`worker/feedback.py`) and
looked up there; a joined one becomes a `feedback` drift sample of its model, so the next drift
report of that model carries the corrections (`worker/window.py`, `drift_report.py`). The join
runs at least once; each sample names its feedback record's partition and offset, and the drift
state counts a record once.

Nothing is dropped: invalid feedback, an id never sent to review (or forgotten after
`FEEDBACK_RETENTION_S`), a label the model does not have and a text that is not the reviewed
one each become a dead letter with that reason, and are counted (`labelstream_feedback`).

Memory stays bounded: each table entry carries its partition and time, and entries older than
the retention are deleted while that partition's events are processed (Faust writes a table's
changelog to the partition of the event being processed, so a key is deleted only from within
its own partition).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from contracts.review import Review
from contracts.text import model_text
from worker import metrics
from worker.drift_flow import sample_record
from worker.feedback import feedback_dead_letter, validate_feedback
from worker.messages import OutRecord, RawMessage
from worker.publishing import SendAll, publish
from worker.settings import WorkerSettings
from worker.validation import Rejection
from worker.window import Sample

log = structlog.get_logger(__name__)

JOIN_REASONS = frozenset({"unknown_id", "expired", "unknown_label", "text_mismatch"})
"""Dead-letter reasons of valid feedback that cannot be joined (besides validation's)."""


class Delivered(Protocol):
    """What the agent needs of a consumed record (a Faust `Message`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    headers: Any


def text_hash(text: str) -> str:
    """Of the text as the model read it: a correction carrying another text is not joined."""
    return hashlib.blake2b(model_text(text).encode("utf-8"), digest_size=8).hexdigest()


class FeedbackJoin:
    """The join agent's body, one consumed record at a time."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        settings: WorkerSettings,
        send_all: SendAll,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.settings = settings
        self.send_all = send_all
        self.clock = clock
        self._purged: dict[int, float] = {}

    async def take(self, message: Delivered) -> str:
        """Remember a review, or join a feedback record; returns what happened to it."""
        if message.topic == self.settings.review_topic:
            outcome = self.remember(message)
        else:
            outcome, record = self.join(message)
            await publish([record], self.send_all)
            metrics.FEEDBACK.labels(outcome).inc()
            log.info("feedback", outcome=outcome, partition=message.partition)
        self._purge(message.partition)
        return outcome

    def remember(self, message: Delivered) -> str:
        try:
            review = Review.from_json(message.value or b"")
        except (ValueError, KeyError, TypeError) as exc:  # our own topic: a bug, say so
            log.error("review_unreadable", offset=message.offset, error=repr(exc))
            return "review_unreadable"
        self.table[review.id] = {
            "model": review.model,
            "version": review.version,
            "label": review.label,
            "labels": list(review.scores),
            "text_hash": text_hash(review.text),
            "at": self.clock(),
            "partition": message.partition,
        }
        return "remembered"

    def join(self, message: Delivered) -> tuple[str, OutRecord]:
        """(outcome, the record it publishes): a drift sample, or the dead letter."""
        feedback = validate_feedback(message.value, message.key, self.settings.max_message_bytes)
        if isinstance(feedback, Rejection):
            return "invalid", self._dead(message, feedback)
        prediction = self.table.get(feedback.id)
        rejection = self._unjoinable(feedback.id, feedback.label, feedback.text, prediction)
        if rejection is not None:
            return rejection.type, self._dead(message, rejection)
        assert prediction is not None
        labels = prediction["labels"]
        sample = Sample(
            kind="feedback",
            model=prediction["model"],
            sent_at=self.clock(),
            version=prediction["version"],
            labels=labels,
            feedback=[[labels.index(prediction["label"]), labels.index(feedback.label)]],
            feedback_at=[message.partition, message.offset],
        )
        return "joined", sample_record(self.settings.drift_samples_topic, sample)

    def _unjoinable(
        self, mid: str, label: str, text: str | None, prediction: dict[str, Any] | None
    ) -> Rejection | None:
        if prediction is None:
            return Rejection("unknown_id", f"no prediction sent to review for id {mid!r}")
        age = self.clock() - prediction["at"]
        if age > self.settings.feedback_retention_s:
            return Rejection("expired", f"the prediction for {mid!r} is {age:.0f} s old")
        if label not in prediction["labels"]:
            known = ", ".join(prediction["labels"])
            return Rejection("unknown_label", f"{label!r} is not a label of {prediction['model']}"
                             f" ({known})")  # fmt: skip
        if text is not None and text_hash(text) != prediction["text_hash"]:
            return Rejection("text_mismatch", f"the text is not the one reviewed for {mid!r}")
        return None

    def _dead(self, message: Delivered, rejection: Rejection) -> OutRecord:
        raw = RawMessage.of(message)
        return feedback_dead_letter(raw, rejection, self.settings, datetime.now(UTC))

    def _purge(self, partition: int) -> None:
        """Forget this partition's predictions older than the retention (once a minute)."""
        now = self.clock()
        if now - self._purged.get(partition, 0.0) < 60.0:
            return
        self._purged[partition] = now
        limit = now - self.settings.feedback_retention_s
        stale = [
            key
            for key, value in list(self.table.items())
            if value["partition"] == partition and value["at"] < limit
        ]
        for key in stale:
            del self.table[key]
        if stale:
            log.info("predictions_forgotten", partition=partition, count=len(stale))
