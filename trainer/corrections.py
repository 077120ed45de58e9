"""People's corrections from the review loop, joined with their texts and merged into training rows.

A correction is a feedback record (`labelstream.feedback`) joined by id with the review the
worker wrote for it (`labelstream.review`): the review names the model, the feedback the label.
Feedback has no model field, so only the review tells whose it is; a feedback record that
carries its own text but has no review is kept when its label is one of the model's labels.
Nothing is dropped silently: every feedback record read is either used or counted under the
reason it was ignored (`Corrections.ignored`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from contracts.review import Feedback, Review
from contracts.text import model_text
from trainer.data import Example
from worker.client import Record, read_topics

log = structlog.get_logger(__name__)

RecordReader = Callable[[list[str]], list[Record]]
"""Reads the given topics from their beginning to their end offsets (Kafka, or a test's fake)."""

OTHER_MODEL = "other_model"
NO_TEXT = "no_text"
EMPTY_TEXT = "empty_text"
UNKNOWN_LABEL = "unknown_label"
UNREADABLE = "unreadable"
SUPERSEDED = "superseded"
RETRACTED = "retracted"
SAME_TEXT = "same_text_later_correction"


@dataclass(frozen=True)
class Correction:
    """A person's label for one text, the text as the model reads it."""

    id: str
    text: str
    label: str
    by: str


@dataclass
class Corrections:
    """The usable corrections of one model and what became of every other feedback record."""

    items: list[Correction]
    read: int
    """Feedback records read (tombstones included)."""
    ignored: Counter[str] = field(default_factory=Counter)
    """Reason -> feedback records not used; `read == len(items) + sum(ignored.values())`."""

    def summary(self) -> dict[str, Any]:
        return {"read": self.read, "used": len(self.items), "ignored": dict(self.ignored)}


def kafka_reader(
    bootstrap_servers: str, security: Mapping[str, Any], timeout_s: float = 600.0
) -> RecordReader:
    """Read committed records only, to the end offsets; a read that cannot finish in time raises
    instead of passing a part of a topic off as all of it."""

    def read(topics: list[str]) -> list[Record]:
        return asyncio.run(
            read_topics(
                bootstrap_servers,
                topics,
                timeout_s=timeout_s,
                security=security,
                isolation_level="read_committed",
                require_end=True,
            )
        )

    return read


def read_corrections(
    read: RecordReader,
    model: str,
    labels: Sequence[str],
    feedback_topic: str,
    review_topic: str,
) -> Corrections:
    """Every correction of `model` on the feedback topic, with its text."""
    records = sorted(read([feedback_topic, review_topic]), key=lambda r: (r.partition, r.offset))
    feedback = [record for record in records if record.topic == feedback_topic]
    reviews = latest_reviews(record for record in records if record.topic == review_topic)
    corrections = join(feedback, reviews, model, labels)
    log.info("retrain.corrections_read", model=model, **corrections.summary())
    return corrections


def latest_reviews(records: Iterable[Record]) -> dict[str, Review]:
    """Review per id, the last one read winning; unreadable reviews are logged and skipped."""
    reviews: dict[str, Review] = {}
    unreadable = 0
    for record in records:
        try:
            review = Review.from_json(record.value or b"")
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        reviews[review.id] = review
    if unreadable:
        log.warning("retrain.reviews_unreadable", count=unreadable)
    return reviews


def _feedback(record: Record) -> Feedback | None:
    """The feedback record, or None when it is not one (a field missing or not a string)."""
    try:
        data = orjson.loads(record.value or b"")
        fields = {name: data[name] for name in ("id", "label", "by", "ts")}
        text = data.get("text")
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(value, str) for value in (*fields.values(), text or "")):
        return None
    return Feedback(**fields, text=text)


def latest_feedback(records: Sequence[Record], ignored: Counter[str]) -> dict[str, Feedback]:
    """Feedback per id in topic order, the last one winning (a tombstone retracts the id's
    feedback: the key is the id); every record that does not end up winning is counted."""
    latest: dict[str, Feedback | None] = {}
    for record in records:
        key = (record.key or b"").decode("utf-8", errors="replace")
        feedback = None if record.value is None else _feedback(record)
        if record.value is not None and feedback is None:
            ignored[UNREADABLE] += 1
            continue
        identity = feedback.id if feedback is not None else key
        if identity in latest:
            ignored[SUPERSEDED] += 1
        latest[identity] = feedback
    retracted = [identity for identity, feedback in latest.items() if feedback is None]
    ignored[RETRACTED] += len(retracted)
    return {identity: fb for identity, fb in latest.items() if fb is not None}


def _ignored_reason(
    feedback: Feedback, review: Review | None, model: str, labels: Sequence[str]
) -> str | None:
    """Why this feedback cannot be a correction of `model`, or None when it can."""
    if review is not None and review.model != model:
        return OTHER_MODEL
    if review is None and feedback.text is None:
        return NO_TEXT
    if feedback.label not in labels:
        return UNKNOWN_LABEL
    return None


def join(
    feedback_records: Sequence[Record],
    reviews: Mapping[str, Review],
    model: str,
    labels: Sequence[str],
) -> Corrections:
    """Corrections of `model`: the latest feedback per id, its text from the feedback record or
    else from the review, normalised as training rows are (`contracts.text.model_text`).

    Two corrections of one text (two ids, one article) would be two rows that contradict each
    other or repeat: the one read later is kept.
    """
    ignored: Counter[str] = Counter()
    by_text: dict[str, Correction] = {}
    for identity, feedback in latest_feedback(feedback_records, ignored).items():
        review = reviews.get(identity)
        reason = _ignored_reason(feedback, review, model, labels)
        text = model_text(feedback.text or (review.text if review else "")).strip()
        if reason is None and not text:
            reason = EMPTY_TEXT
        if reason is not None:
            ignored[reason] += 1
            continue
        if text in by_text:
            ignored[SAME_TEXT] += 1
            del by_text[text]  # re-inserted last: the dict keeps reading order
        by_text[text] = Correction(identity, text, feedback.label, feedback.by)
    return Corrections(list(by_text.values()), len(feedback_records), +ignored)


@dataclass
class Changes:
    """What merging corrections into training rows did, per label name."""

    relabelled: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(base label, corrected label) -> rows whose label the correction changed."""
    confirmed: Counter[str] = field(default_factory=Counter)
    """Label -> rows a correction overrode with the label they already had."""
    added: Counter[str] = field(default_factory=Counter)
    """Label -> corrections whose text was not a base row: appended."""

    def summary(self) -> dict[str, Any]:
        return {
            "relabelled": sum(self.relabelled.values()),
            "confirmed": sum(self.confirmed.values()),
            "added": sum(self.added.values()),
            "relabelled_from_to": [
                {"from": old, "to": new, "rows": rows}
                for (old, new), rows in sorted(self.relabelled.items())
            ],
            "confirmed_by_label": dict(sorted(self.confirmed.items())),
            "added_by_label": dict(sorted(self.added.items())),
        }


def merge(
    base_rows: Sequence[Example], corrections: Sequence[Correction], labels: Sequence[str]
) -> tuple[list[Example], Changes]:
    """Base rows with each correction applied: it overrides the row with the same text (the
    row keeps its place) or, when there is none, is appended."""
    index = {name: position for position, name in enumerate(labels)}
    rows = list(base_rows)
    where = {row.text: position for position, row in enumerate(rows)}
    changes = Changes()
    for correction in corrections:
        corrected = Example(text=correction.text, label=index[correction.label])
        position = where.get(correction.text)
        if position is None:
            where[correction.text] = len(rows)
            rows.append(corrected)
            changes.added[correction.label] += 1
            continue
        old = labels[rows[position].label]
        if old == correction.label:
            changes.confirmed[old] += 1
        else:
            changes.relabelled[(old, correction.label)] += 1
        rows[position] = corrected
    return rows, changes
