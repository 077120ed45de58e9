"""`worker review`: a person labels the records the model was unsure of, one key press each.

The loop (`review_loop`) sees Kafka only through `ReviewBus` and the keyboard only through a
key source, so it is unit-tested with fakes; `KafkaReviewBus` and `TerminalKeys` are the real
ones. Reviews are shown oldest first (by the time the worker labelled them), each id once,
skipping ids that already have feedback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, TextIO

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from contracts.review import Feedback, Review
from worker.client import Record, read_topics
from worker.feedback import validate_feedback
from worker.security import kafka_client_kwargs
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)

SKIP, QUIT = "s", "q"
MAX_SHOWN_CHARS = 2000
"""A longer text is shown cut (the feedback still carries all of it)."""

KeySource = Callable[[], Awaitable[str]]
"""Returns the next key pressed (one character; "" for none, "q" at end of input)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the two topics hold now: reviews in topic order, and ids with feedback."""

    reviews: list[Review]
    reviewed: set[str]


class ReviewBus(Protocol):
    """Kafka as the loop needs it."""

    async def snapshot(self) -> Snapshot: ...

    async def publish(self, feedback: Feedback) -> None:
        """Returns once the broker acknowledged the record (acks=all)."""


@dataclass(slots=True)
class Session:
    """What one `worker review` did."""

    picked: list[Feedback] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    quit: bool = False

    @property
    def done(self) -> set[str]:
        return {f.id for f in self.picked} | set(self.skipped)


def labelled_at(review: Review) -> datetime:
    """The review's `ts` as an aware datetime (naive means UTC), for ordering."""
    when = datetime.fromisoformat(review.ts)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def to_review(snapshot: Snapshot, done: set[str]) -> list[Review]:
    """Reviews without feedback and not handled in this session, oldest first, each id once."""
    seen = snapshot.reviewed | done
    queue: dict[str, Review] = {}
    for review in sorted(snapshot.reviews, key=labelled_at):
        if review.id not in seen:
            queue.setdefault(review.id, review)
    return list(queue.values())


def parse_review(value: bytes | None) -> Review | str:
    """The review in `value`, or why it cannot be shown."""
    try:
        review = Review.from_json(value or b"")
        labelled_at(review)
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a review: {exc!r}"
    scores = review.scores
    if not isinstance(review.text, str) or not isinstance(review.id, str) or not review.id:
        return "id and text must be strings, id not empty"
    if not isinstance(review.confidence, int | float):
        return "confidence must be a number"
    if not isinstance(scores, dict) or not scores:
        return "scores must be a non-empty object"
    if not all(isinstance(k, str) and k for k in scores):
        return "every label must be a non-empty string"
    if not all(isinstance(p, int | float) for p in scores.values()):
        return "every score must be a number"
    return review


def snapshot_of(records: Iterable[Record], review_topic: str, max_bytes: int) -> Snapshot:
    """Split one read of both topics: readable reviews, and the ids of valid feedback."""
    reviews: list[Review] = []
    reviewed: set[str] = set()
    for record in records:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        if record.topic == review_topic:
            review = parse_review(record.value)
            if isinstance(review, str):
                log.warning("review record skipped", reason=review, **where)
                continue
            reviews.append(review)
            continue
        feedback = validate_feedback(record.value, record.key, max_bytes)
        if isinstance(feedback, Feedback):
            reviewed.add(feedback.id)
        else:
            log.warning("feedback record ignored", reason=feedback.type, **where)
    return Snapshot(reviews, reviewed)


def render(review: Review, position: int, total: int) -> RenderableType:
    """One review as a person judges it: the text, then every label with its key and score."""
    text = review.text if len(review.text) <= MAX_SHOWN_CHARS else review.text[:MAX_SHOWN_CHARS]
    cut = Text(f"\n… {len(review.text) - MAX_SHOWN_CHARS} more characters", style="dim")
    table = Table(show_edge=False, box=None, padding=(0, 2))
    for column in ("key", "label", "score", ""):
        table.add_column(column)
    for number, (label, score) in enumerate(review.scores.items(), 1):
        predicted = label == review.label
        table.add_row(
            Text(str(number) if number <= 9 else ""),
            Text(label, style="bold" if predicted else ""),
            Text(f"{score:.3f}"),
            Text("← model" if predicted else "", style="cyan"),
        )
    about = Text(
        f"model {review.model}:{review.version} · predicted {review.label} "
        f"({review.confidence:.3f}) · {review.route} · {review.ts}",
        style="dim",
    )
    keys = Text(f"1-{min(len(review.scores), 9)} pick label · s skip · q quit", style="bold")
    body = [Text(text), *([cut] if len(text) < len(review.text) else []), Text(""), table]
    title = Text(f"review {position} of {total} · id {review.id}")
    return Group(Panel(Group(*body), title=title, title_align="left"), about, keys)


def chosen_label(key: str, review: Review) -> str | None:
    """The label a digit key picks, or None for any other key."""
    labels = list(review.scores)
    if len(key) == 1 and key in "123456789" and int(key) <= len(labels):
        return labels[int(key) - 1]
    return None


async def decide(review: Review, keys: KeySource) -> tuple[str, str | None]:
    """Wait for a key that means something (others are ignored): a digit and the label it
    picks, or SKIP or QUIT and None (a label may itself be called "s")."""
    while True:
        key = (await keys()).lower()
        if key in (SKIP, QUIT):
            return key, None
        label = chosen_label(key, review)
        if label is not None:
            return key, label


async def review_loop(
    bus: ReviewBus,
    keys: KeySource,
    console: Console,
    *,
    by: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Session:
    """Show what is left to review until nothing is (reading the topics again at the end of
    each pass, for reviews that arrived meanwhile) or the person quits."""
    session = Session()
    while queue := to_review(await bus.snapshot(), session.done):
        for position, review in enumerate(queue, 1):
            console.clear()
            console.print(render(review, position, len(queue)))
            key, label = await decide(review, keys)
            if key == QUIT:
                session.quit = True
                console.print(f"stopped: {_tally(session)}")
                return session
            if label is None:
                session.skipped.append(review.id)
                continue
            feedback = Feedback(review.id, label, by, clock().isoformat(), review.text)
            await bus.publish(feedback)
            session.picked.append(feedback)
    console.clear()
    console.print(f"nothing to review ({_tally(session)})")
    return session


def _tally(session: Session) -> str:
    return f"{len(session.picked)} labelled, {len(session.skipped)} skipped"


class TerminalKeys:
    """Key presses without Enter from a terminal (cbreak mode: no echo, Ctrl-C still stops),
    restored on exit; from anything else (a pipe, a file) one key per line. End of input (and
    Ctrl-D on a terminal) is QUIT."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdin
        self._fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> TerminalKeys:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self
        if os.isatty(fd):
            self._fd, self._saved = fd, termios.tcgetattr(fd)
            tty.setcbreak(fd)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = self._saved = None

    async def __call__(self) -> str:
        if self._fd is None:
            line = await asyncio.to_thread(self._stream.readline)
            return line.strip()[:1] if line else QUIT
        return await self._key(self._fd)

    @staticmethod
    async def _key(fd: int) -> str:
        """One byte once the terminal has one, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        data = os.read(fd, 1)
        return QUIT if data in (b"", b"\x04") else data.decode("latin-1")  # Ctrl-D: quit too


class KafkaReviewBus:
    """The review and feedback topics, both read read_committed; feedback sent with acks=all."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **kafka_client_kwargs(settings),
        )

    async def __aenter__(self) -> KafkaReviewBus:
        # stop() also closes what a failed start() left open
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()

    async def snapshot(self) -> Snapshot:
        settings = self._settings
        records = await read_topics(
            settings.kafka_bootstrap_servers,
            [settings.review_topic, settings.feedback_topic],
            security=kafka_client_kwargs(settings),
            isolation_level="read_committed",
        )
        return snapshot_of(records, settings.review_topic, settings.max_message_bytes)

    async def publish(self, feedback: Feedback) -> None:
        await self._producer.send_and_wait(
            self._settings.feedback_topic, feedback.to_json(), key=feedback.id.encode()
        )


def default_reviewer() -> str:
    return os.environ.get("USER") or "reviewer"


async def _review(settings: WorkerSettings, by: str, console: Console) -> Session:
    from worker.topics import ensure_named_topics

    await ensure_named_topics(settings, [settings.review_topic, settings.feedback_topic])
    with TerminalKeys() as keys:
        async with KafkaReviewBus(settings) as bus:
            return await review_loop(bus, keys, console, by=by)


def run_review(settings: WorkerSettings, by: str, errors: Console) -> int:
    """`worker review` itself; returns the exit code (0 also when nothing was left)."""
    from worker.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        session = asyncio.run(_review(settings, by, Console()))
    except (KafkaError, TimeoutError) as exc:
        errors.print(f"[red]error:[/red] Kafka: {exc!r}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    log.info("review done", labelled=len(session.picked), skipped=len(session.skipped), by=by)
    return 0
