"""The feedback join without Faust: reviews remembered, feedback joined to them as drift samples,
and every feedback record that cannot be joined a dead letter with its reason."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from contracts.review import Feedback, Review
from worker import metrics
from worker.feedback_join import JOIN_REASONS, FeedbackJoin
from worker.settings import WorkerSettings

SETTINGS = WorkerSettings(_env_file=None, feedback_retention_s=3600.0)
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def review(mid: str, label: str = "Sports", text: str = "Cup final tonight") -> Review:
    scores = {name: 0.1 for name in LABELS} | {label: 0.7}
    return Review(mid, text, label, 0.7, scores, "news_topic", "4", "news.raw", "2026-12-05T00:00Z")


def delivered(topic: str, key: bytes, value: bytes, partition: int = 1, offset: int = 0):
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=key, value=value,
        timestamp=1_700_000_000.0, headers=[],
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def joiner() -> tuple[FeedbackJoin, list, dict, Clock]:
    sent: list = []

    async def send_all(records):
        sent.extend(records)
        return [None] * len(records)

    table: dict = {}
    clock = Clock()
    return FeedbackJoin(table, SETTINGS, send_all, clock), sent, table, clock


async def remember(join: FeedbackJoin, item: Review, partition: int = 1) -> None:
    message = delivered(SETTINGS.review_topic, item.id.encode(), item.to_json(), partition)
    assert await join.take(message) == "remembered"


def feedback(mid: str, label: str, text: str | None = None) -> SimpleNamespace:
    value = Feedback(mid, label, "ana", "2026-12-05T10:00:00Z", text).to_json()
    return delivered(SETTINGS.feedback_topic, mid.encode(), value)


async def test_a_correction_joins_its_prediction_as_a_feedback_sample_of_that_version():
    join, sent, _, _ = joiner()
    await remember(join, review("m1", label="Sports"))
    before = metrics.FEEDBACK.labels("joined")._value.get()
    assert await join.take(feedback("m1", "Business", text="Cup final tonight")) == "joined"
    assert metrics.FEEDBACK.labels("joined")._value.get() == before + 1
    (record,) = sent
    assert (record.topic, record.key) == (SETTINGS.drift_samples_topic, b"news_topic")
    sample = orjson.loads(record.value)
    assert (sample["kind"], sample["version"], sample["labels"]) == ("feedback", "4", LABELS)
    assert sample["feedback"] == [[1, 2]], "predicted Sports (1), corrected to Business (2)"
    assert sample["feedback_at"] == [1, 0], "the feedback record's partition and offset"


@pytest.mark.parametrize(
    ("reason", "label", "text", "age"),
    [
        ("unknown_label", "Cooking", None, 0),
        ("text_mismatch", "World", "another text", 0),
        ("expired", "World", None, 3601),
    ],
)
async def test_feedback_that_cannot_be_joined_is_a_dead_letter_with_its_reason(
    reason, label, text, age
):
    join, sent, _, clock = joiner()
    await remember(join, review("m1"))
    clock.now += age
    assert await join.take(feedback("m1", label, text)) == reason
    (record,) = sent
    dead = orjson.loads(record.value)
    assert record.topic == SETTINGS.deadletter_topic and record.key == b"m1"
    assert dead["error"]["type"] == reason and dead["topic"] == SETTINGS.feedback_topic
    assert reason in JOIN_REASONS


async def test_feedback_for_an_id_never_reviewed_is_counted_and_dead_lettered():
    join, sent, _, _ = joiner()
    before = metrics.FEEDBACK.labels("unknown_id")._value.get()
    assert await join.take(feedback("nobody", "World")) == "unknown_id"
    assert metrics.FEEDBACK.labels("unknown_id")._value.get() == before + 1
    assert orjson.loads(sent[0].value)["error"]["type"] == "unknown_id"


async def test_invalid_feedback_is_a_dead_letter_like_invalid_input():
    join, sent, _, _ = joiner()
    assert await join.take(delivered(SETTINGS.feedback_topic, b"m1", b"{nope")) == "invalid"
    assert orjson.loads(sent[0].value)["error"]["type"] == "invalid_json"


async def test_predictions_older_than_the_retention_are_forgotten_partition_by_partition():
    join, _, table, clock = joiner()
    await remember(join, review("old-1"), partition=1)
    await remember(join, review("old-2"), partition=2)
    clock.now += 3601
    await remember(join, review("new-1"), partition=1)  # an event of partition 1: it purges
    assert set(table) == {"old-2", "new-1"}, "partition 2's entry waits for its own event"
    clock.now += 61
    await remember(join, review("new-2"), partition=2)
    assert set(table) == {"new-1", "new-2"}
