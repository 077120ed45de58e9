"""`worker review`'s loop against a fake Kafka and scripted keys, and its key reader on a real
pseudo-terminal."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import re
import termios
from dataclasses import asdict
from datetime import UTC, datetime

import orjson
import pytest
from rich.console import Console

from contracts.review import Feedback, Review
from worker.client import Record
from worker.feedback import validate_feedback
from worker.review import (
    Snapshot,
    TerminalKeys,
    parse_review,
    render,
    review_loop,
    snapshot_of,
    to_review,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SCORES = {"World": 0.2, "Sports": 0.45, "Business": 0.3, "Sci/Tech": 0.05}


def review(id: str, ts: str, text: str | None = None, **changes: object) -> Review:
    fields = {
        "id": id,
        "text": text or f"text of {id}",
        "label": "Sports",
        "confidence": 0.45,
        "scores": SCORES,
        "model": "news_topic",
        "version": "3",
        "route": "news.raw",
        "ts": ts,
    }
    return Review(**{**fields, **changes})


class FakeBus:
    """The two topics in memory: publishing a feedback record makes its id reviewed."""

    def __init__(self, reviews: list[Review], reviewed: set[str] = frozenset()) -> None:
        self.reviews = list(reviews)
        self.reviewed = set(reviewed)
        self.published: list[Feedback] = []
        self.snapshots = 0

    async def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return Snapshot(list(self.reviews), self.reviewed | {f.id for f in self.published})

    async def publish(self, feedback: Feedback) -> None:
        self.published.append(feedback)


class Keys:
    """Scripted key presses; running out of them is a test failure, not a quit."""

    def __init__(self, *keys: str) -> None:
        self.keys = list(keys)

    async def __call__(self) -> str:
        assert self.keys, "the loop asked for more keys than the test pressed"
        return self.keys.pop(0)


class Screens:
    """A console that keeps what each record's screen showed."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.console = Console(file=self.out, width=120, color_system=None)

    @property
    def text(self) -> str:
        return self.out.getvalue()


def run(bus: FakeBus, keys: Keys, screens: Screens | None = None):
    console = (screens or Screens()).console
    return asyncio.run(review_loop(bus, keys, console, by="ana", clock=lambda: NOW))


def test_a_digit_publishes_that_label_of_the_scores_in_their_order():
    bus = FakeBus([review("a", "2026-12-01T10:00:00+00:00")])
    run(bus, Keys("3"))
    assert bus.published == [
        Feedback("a", "Business", "ana", "2026-12-02T12:00:00+00:00", "text of a")
    ]


def test_the_publication_is_valid_feedback():
    bus = FakeBus([review("a", "2026-12-01T10:00:00+00:00")])
    run(bus, Keys("1"))
    (feedback,) = bus.published
    assert validate_feedback(feedback.to_json(), feedback.id.encode(), 10_000) == feedback


def test_skip_publishes_nothing_and_shows_the_next():
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z"), review("b", "2026-12-01T11:00:00Z")])
    session = run(bus, Keys("s", "2"))
    assert [(f.id, f.label) for f in bus.published] == [("b", "Sports")]
    assert session.skipped == ["a"] and not session.quit


def test_quit_stops_before_the_rest():
    bus = FakeBus([review(i, f"2026-12-01T1{n}:00:00Z") for n, i in enumerate("abc")])
    screens = Screens()
    session = run(bus, Keys("1", "q"), screens)
    assert [f.id for f in bus.published] == ["a"]
    assert session.quit and "text of c" not in screens.text
    assert "stopped: 1 labelled, 0 skipped" in screens.text


def test_already_reviewed_ids_are_not_shown():
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z"), review("b", "2026-12-01T11:00:00Z")], {"a"})
    screens = Screens()
    run(bus, Keys("1"), screens)
    assert "text of a" not in screens.text and "text of b" in screens.text
    assert [f.id for f in bus.published] == ["b"]


def test_oldest_first_whatever_the_topic_order_and_offsets():
    reviews = [
        review("late", "2026-12-01T12:00:00+00:00"),
        review("early", "2026-12-01T13:00:00+03:00"),  # 10:00 UTC
        review("naive", "2026-12-01T11:00:00"),  # naive = UTC
    ]
    bus = FakeBus(reviews)
    run(bus, Keys("1", "1", "1"))
    assert [f.id for f in bus.published] == ["early", "naive", "late"]


def test_an_id_reviewed_twice_by_the_worker_is_shown_once():
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z"), review("a", "2026-12-01T11:00:00Z")])
    session = run(bus, Keys("2"))
    assert len(bus.published) == 1 and not session.quit


def test_nothing_to_review_says_so_without_asking_for_keys():
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z")], {"a"})
    screens = Screens()
    session = run(bus, Keys(), screens)
    assert screens.text.strip() == "nothing to review (0 labelled, 0 skipped)"
    assert not session.quit and bus.published == []


def test_keys_that_mean_nothing_are_ignored():
    # four labels: 5 and 0 are no label; x, Enter and an escape byte are no command
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z")])
    run(bus, Keys("5", "0", "x", "\n", "\x1b", "4"))
    assert [f.label for f in bus.published] == ["Sci/Tech"]


def test_labels_named_like_commands_are_picked_by_their_digit():
    scores = {"s": 0.6, "q": 0.4}
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z", scores=scores, label="s")])
    session = run(bus, Keys("2"))
    assert [f.label for f in bus.published] == ["q"] and not session.quit


def test_reviews_arriving_meanwhile_are_shown_and_skipped_ones_not_again():
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z"), review("b", "2026-12-01T11:00:00Z")])
    keys = Keys("s", "1", "2")
    original = bus.publish

    async def publish_and_receive(feedback: Feedback) -> None:
        await original(feedback)
        bus.reviews.append(review("c", "2026-12-01T09:00:00Z"))

    bus.publish = publish_and_receive
    session = run(bus, keys)
    assert [(f.id, f.label) for f in bus.published] == [("b", "World"), ("c", "Sports")]
    assert session.skipped == ["a"] and bus.snapshots == 3


def test_the_screen_shows_text_labels_with_keys_and_the_model():
    screens = Screens()
    screens.console.print(render(review("a", "2026-12-01T10:00:00Z", "[bold]Cup[/] final"), 1, 3))
    shown = screens.text
    assert "[bold]Cup[/] final" in shown  # the text is shown as written, never as markup
    assert "review 1 of 3 · id a" in shown
    for number, (label, score) in enumerate(SCORES.items(), 1):
        assert re.search(rf"│\s+{number}\s+{re.escape(label)}\s+{score:.3f}\s", shown), label
    assert "news_topic:3" in shown and "predicted Sports (0.450)" in shown
    assert "1-4 pick label · s skip · q quit" in shown


def test_a_long_text_is_cut_on_screen_but_not_in_the_feedback():
    long = "word " * 1000
    screens = Screens()
    bus = FakeBus([review("a", "2026-12-01T10:00:00Z", long)])
    run(bus, Keys("1"), screens)
    assert "3000 more characters" in screens.text
    assert bus.published[0].text == long


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "not a review"),
        (b"[1]", "not a review"),
        (b'{"id": "a"}', "not a review"),
        (review("a", "yesterday").to_json(), "not a review"),
        (review("a", "2026-12-01T10:00:00Z", scores={}).to_json(), "scores must be a non-empty"),
        (review("a", "2026-12-01T10:00:00Z", scores=[1]).to_json(), "scores must be a non-empty"),
        (review("a", "2026-12-01T10:00:00Z", scores={"": 1}).to_json(), "every label"),
        (review("a", "2026-12-01T10:00:00Z", scores={"x": "1"}).to_json(), "every score"),
        (review("", "2026-12-01T10:00:00Z").to_json(), "id and text"),
        (review("a", "2026-12-01T10:00:00Z", confidence="high").to_json(), "confidence"),
        (orjson.dumps({**asdict(review("a", "2026-12-01T10:00:00Z")), "text": 5}), "id and text"),
    ],
)
def test_unreadable_reviews_are_named(value, reason):
    outcome = parse_review(value)
    assert isinstance(outcome, str) and outcome.startswith(reason)


def test_snapshot_keeps_readable_reviews_and_ids_of_valid_feedback_only():
    good = review("a", "2026-12-01T10:00:00Z")
    feedback = Feedback("b", "World", "ana", "2026-12-02T12:00:00Z")
    records = [
        Record("rev", 0, 0, b"a", good.to_json()),
        Record("rev", 1, 0, b"x", b"not json"),
        Record("fb", 0, 0, b"b", feedback.to_json()),
        Record("fb", 0, 1, b"c", b'{"id": "c", "label": ""}'),
    ]
    snapshot = snapshot_of(records, "rev", 10_000)
    assert snapshot == Snapshot([good], {"b"})
    assert to_review(snapshot, set()) == [good]


def test_lines_are_keys_when_stdin_is_not_a_terminal():
    async def read_all(keys: TerminalKeys) -> list[str]:
        return [await keys() for _ in range(4)]

    with TerminalKeys(io.StringIO("2\n\n s\n")) as keys:
        assert asyncio.run(read_all(keys)) == ["2", "", "s", "q"]  # end of input quits


def test_a_terminal_gives_single_keys_without_echo_and_is_restored():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        with os.fdopen(os.dup(slave), "r") as stream, TerminalKeys(stream) as keys:
            during = termios.tcgetattr(slave)
            assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
            os.write(master, b"2s\x04")  # no Enter; Ctrl-D last

            async def three() -> list[str]:
                return [await asyncio.wait_for(keys(), 5) for _ in range(3)]

            assert asyncio.run(three()) == ["2", "s", "q"]
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
