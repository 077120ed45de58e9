"""Corrections: feedback joined with reviews by id (latest wins, other models' ignored and
counted), merged into training rows by the text the model reads; the Kafka read goes to the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import worker.client as client_module
from contracts.review import FEEDBACK_TOPIC, REVIEW_TOPIC, Feedback, Review
from trainer.corrections import Correction, Corrections, join, merge, read_corrections
from trainer.data import Example, read_examples
from worker.client import Record, read_topics

LABELS = ("World", "Sports", "Business", "Sci/Tech")
MODEL = "news_topic"


def feedback(offset: int, id: str, label: str, text: str | None = None, by: str = "ann") -> Record:
    value = Feedback(id=id, label=label, by=by, ts=f"2026-01-01T00:00:{offset:02d}Z", text=text)
    return Record(FEEDBACK_TOPIC, 0, offset, id.encode(), value.to_json())


def review(offset: int, id: str, text: str, model: str = MODEL) -> Record:
    value = Review(
        id=id,
        text=text,
        label="World",
        confidence=0.4,
        scores={"World": 0.4, "Sports": 0.3, "Business": 0.2, "Sci/Tech": 0.1},
        model=model,
        version="1",
        route="news.raw",
        ts="2026-01-01T00:00:00Z",
    )
    return Record(REVIEW_TOPIC, 0, offset, id.encode(), value.to_json())


def joined(records: list[Record]) -> Corrections:
    """`join` as `read_corrections` calls it, checking that every record is accounted for."""
    fb = [r for r in records if r.topic == FEEDBACK_TOPIC]
    reviews = {}
    for r in records:
        if r.topic == REVIEW_TOPIC:
            parsed = Review.from_json(r.value)
            reviews[parsed.id] = parsed
    corrections = join(fb, reviews, MODEL, LABELS)
    assert corrections.read == len(corrections.items) + sum(corrections.ignored.values())
    return corrections


def test_the_latest_feedback_for_an_id_wins_and_the_earlier_one_is_counted() -> None:
    corrections = joined(
        [review(0, "a", "stocks fell"), feedback(0, "a", "World"), feedback(1, "a", "Business")]
    )
    assert corrections.items == [Correction("a", "stocks fell", "Business", "ann")]
    assert corrections.ignored == Counter(superseded=1)


def test_feedback_on_another_models_review_is_ignored_and_counted() -> None:
    corrections = joined(
        [
            review(0, "mine", "a goal in extra time"),
            review(1, "theirs", "great film", model="review_sentiment"),
            feedback(0, "mine", "Sports"),
            # its label and its own text would do for the news model: the review says whose it is
            feedback(1, "theirs", "World", text="great film"),
        ]
    )
    assert [c.id for c in corrections.items] == ["mine"]
    assert corrections.ignored == Counter(other_model=1)


def test_the_text_is_the_feedbacks_own_else_the_reviews_as_the_model_reads_it() -> None:
    corrections = joined(
        [
            review(0, "a", "  rates rise \x96 again \n"),
            review(1, "b", "review text"),
            feedback(0, "a", "Business"),
            feedback(1, "b", "Sci/Tech", text="the person's text"),
        ]
    )
    assert {c.id: c.text for c in corrections.items} == {
        "a": "rates rise \u2013 again",  # cp1252's en dash repaired, stripped: model_text
        "b": "the person's text",
    }


def test_feedback_without_a_review_needs_its_own_text_and_one_of_the_models_labels() -> None:
    corrections = joined(
        [
            feedback(0, "kept", "Sports", text="a late winner"),
            feedback(1, "foreign label", "positive", text="loved it"),
            feedback(2, "no text", "World"),
            feedback(3, "blank", "World", text=" \x01 "),
        ]
    )
    assert [c.id for c in corrections.items] == ["kept"]
    assert corrections.ignored == Counter(unknown_label=1, no_text=1, empty_text=1)


def test_a_tombstone_retracts_an_ids_feedback_and_unreadable_records_are_counted() -> None:
    corrections = joined(
        [
            feedback(0, "a", "World", text="one"),
            Record(FEEDBACK_TOPIC, 0, 1, b"a", None),
            Record(FEEDBACK_TOPIC, 0, 2, b"x", b"not json"),
            Record(FEEDBACK_TOPIC, 0, 3, b"y", b'{"id": "y"}'),
            Record(FEEDBACK_TOPIC, 0, 3, b"z", b'{"id": "z", "label": 1, "by": "b", "ts": "t"}'),
            feedback(4, "b", "Sports", text="two"),
        ]
    )
    assert [c.id for c in corrections.items] == ["b"]
    assert corrections.ignored == Counter(superseded=1, retracted=1, unreadable=3)


def test_two_ids_with_one_text_keep_the_correction_read_later() -> None:
    corrections = joined(
        [feedback(0, "a", "World", text="same story"), feedback(1, "b", "Business", "same story")]
    )
    assert corrections.items == [Correction("b", "same story", "Business", "ann")]
    assert corrections.ignored == Counter(same_text_later_correction=1)


def test_read_corrections_reads_both_topics_and_orders_each_id_by_offset() -> None:
    asked: list[list[str]] = []

    def reader(topics: list[str]) -> list[Record]:
        asked.append(topics)
        # as a consumer may hand them over: not in offset order, topics interleaved
        return [
            feedback(7, "a", "Sports"),
            review(0, "a", "match report"),
            feedback(3, "a", "World"),
        ]

    corrections = read_corrections(reader, MODEL, LABELS, FEEDBACK_TOPIC, REVIEW_TOPIC)
    assert asked == [[FEEDBACK_TOPIC, REVIEW_TOPIC]]
    assert [(c.id, c.label) for c in corrections.items] == [("a", "Sports")]
    assert corrections.summary() == {"read": 2, "used": 1, "ignored": {"superseded": 1}}


def base_rows() -> list[Example]:
    texts_and_labels = [("t1", 0), ("t2", 1), ("t3", 2), ("t4", 3), ("t5", 0)]
    return [Example(text, label) for text, label in texts_and_labels]


def test_merge_overrides_rows_with_the_same_text_in_place_and_appends_the_rest() -> None:
    corrections = [
        Correction("1", "t1", "Sports", "ann"),  # World -> Sports
        Correction("2", "t2", "Sports", "ann"),  # Sports already: confirmed
        Correction("3", "new story", "Business", "bob"),  # not a base row: added
        Correction("4", "t3", "World", "bob"),  # Business -> World
        Correction("5", "another", "Business", "bob"),  # added
    ]
    rows, changes = merge(base_rows(), corrections, LABELS)
    assert rows == [
        Example("t1", 1),
        Example("t2", 1),
        Example("t3", 0),
        Example("t4", 3),
        Example("t5", 0),
        Example("new story", 2),
        Example("another", 2),
    ]
    assert changes.relabelled == Counter({("World", "Sports"): 1, ("Business", "World"): 1})
    assert changes.confirmed == Counter(Sports=1)
    assert changes.added == Counter(Business=2)
    summary = changes.summary()
    assert (summary["relabelled"], summary["confirmed"], summary["added"]) == (2, 1, 2)
    assert summary["relabelled_from_to"][0] == {"from": "Business", "to": "World", "rows": 1}


def test_a_corrected_review_text_matches_the_training_row_read_from_the_file(
    tmp_path: Path,
) -> None:
    """Both sides go through contracts.text.model_text, so raw mojibake still matches."""
    data = tmp_path / "base.tsv"
    data.write_text("text\tlabel\nshares rose \x96 fast\tWorld\nthe cup final\tSports\n")
    base = read_examples(data, LABELS)
    corrections = joined([review(0, "a", "shares rose \x96 fast "), feedback(0, "a", "Business")])
    rows, changes = merge(base, corrections.items, LABELS)
    assert changes.relabelled == Counter({("World", "Business"): 1})
    assert not changes.added and len(rows) == 2


class StuckConsumer:
    """A consumer whose topic has 5 records that never arrive."""

    def __init__(self, **kwargs: object) -> None:
        self._client = self

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fetch_all_metadata(self) -> StuckConsumer:
        return self

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list) -> None: ...

    async def seek_to_beginning(self, *partitions: object) -> None: ...

    async def end_offsets(self, partitions: list) -> dict:
        return {tp: 5 for tp in partitions}

    async def position(self, tp: object) -> int:
        return 0

    async def getmany(self, timeout_ms: int) -> dict:
        return {}


async def test_a_read_that_must_reach_the_end_raises_when_it_cannot(monkeypatch) -> None:
    monkeypatch.setattr(client_module, "AIOKafkaConsumer", StuckConsumer)
    assert await read_topics("kafka:1", ["t"], timeout_s=0.05) == []  # as before: what arrived
    with pytest.raises(TimeoutError, match="end offsets"):
        await read_topics("kafka:1", ["t"], timeout_s=0.05, require_end=True)
