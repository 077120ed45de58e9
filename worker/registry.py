"""The model registry: which version of each model serves, which is a candidate, in what role.

Its records live in the compacted Kafka topic `labelstream.models` (key = model name, value =
the model's whole current `ModelEntry`), read by every worker and by the trainer. Two kinds of
writer change it: `trainer publish/canary/shadow/promote/rollback` (`trainer/rollout.py`) and
each worker's automatic rollback of a failing candidate (`worker/rollout_guard.py`).

Kafka has no compare-and-set, so every reader applies the same rule in the same order (one key,
one partition): a record states the `revision` it was `based` on, and one whose base is not the
revision the reader holds lost a race and is rejected (`RegistryReader.history` keeps every
decision; the loser re-publishes the winner, so the topic's last record per key, all that
compaction keeps, is always an accepted one). `assign` is the pure routing rule the classify
agents apply per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, Field

from worker.client import partitions_of, reached_end

log = structlog.get_logger(__name__)

Role = Literal["canary", "shadow"]


class Candidate(BaseModel):
    """A version served beside the active one: a share of traffic (canary) or a copy (shadow)."""

    version: str
    role: Role
    share: float = Field(0.0, ge=0.0, le=1.0)
    """Canary only: the fraction of messages the candidate labels."""


class ModelEntry(BaseModel):
    """The registry record of one model (the latest record per key is the state)."""

    model: str
    active: str
    candidate: Candidate | None = None
    previous: str | None = None
    """The version that was active before the last promote: where `rollback` goes."""
    labels: dict[str, list[str]] = Field(default_factory=dict)
    """Per version, its label names in output order."""
    metrics: dict[str, dict] = Field(default_factory=dict)
    """Per version, its evaluation summary (accuracy, macro-F1 ...)."""
    event: str
    by: str
    at: str
    note: str | None = None
    """Why the last change happened, when a machine made it (automatic rollback)."""
    revision: int = 0
    """Accepted changes so far (0 in records written before revisions existed)."""
    base: int | None = None
    """The revision the writer read (compare-and-set); None: written without one (older
    releases), accepted as it comes."""

    def revise(self, **changes: Any) -> ModelEntry:
        """This entry with `changes`, stating that it was made from this revision."""
        return self.model_copy(
            update={**changes, "base": self.revision, "revision": self.revision + 1}
        )


@dataclass(frozen=True)
class Decision:
    """One registry record as the readers judged it: the audit trail of every attempt."""

    entry: ModelEntry
    accepted: bool
    held: int | None
    """The revision the reader held when the record came (None: no entry yet)."""


def judge(current: ModelEntry | None, entry: ModelEntry) -> bool | None:
    """True: `entry` replaces `current`; False: it is stale (its writer read an older
    revision) and is rejected; None: it repeats `current` (a loser re-publishing the winner)."""
    if current is None:
        return True
    if entry.model_dump() == current.model_dump():
        return None
    return entry.base is None or entry.base == current.revision


class StaleRevision(RuntimeError):
    """A write lost its compare-and-set: the registry moved on after the writer read it."""

    def __init__(self, attempted: ModelEntry, current: ModelEntry | None) -> None:
        held = current.revision if current else None
        super().__init__(
            f"registry entry of {attempted.model!r} changed while this change was made "
            f"(read revision {attempted.base}, now {held}): {attempted.event} not applied"
        )
        self.attempted = attempted
        self.current = current


def bucket(message_id: str) -> float:
    """A stable number in [0, 1) per message id: the same message always takes the same path,
    also when it is re-processed after a crash."""
    return (zlib.crc32(message_id.encode("utf-8")) % 10_000) / 10_000


def assign(entry: ModelEntry | None, message_ids: Sequence[str]) -> list[str | None]:
    """The version that labels each message: the canary's share goes to the candidate,
    everything else to the active version; None (Triton's default) without a registry entry."""
    if entry is None:
        return [None] * len(message_ids)
    candidate = entry.candidate
    if candidate is None or candidate.role != "canary" or candidate.share <= 0:
        return [entry.active] * len(message_ids)
    return [
        candidate.version if bucket(mid) < candidate.share else entry.active for mid in message_ids
    ]


def shadow_version(entry: ModelEntry | None) -> str | None:
    """The version every message is also sent to (its answers are compared, never published)."""
    if entry is None or entry.candidate is None or entry.candidate.role != "shadow":
        return None
    return entry.candidate.version


def auto_rollback(
    entry: ModelEntry | None,
    report: dict,
    *,
    max_failure_rate: float,
    min_agreement: float,
    by: str,
    at: str,
) -> ModelEntry | None:
    """The entry without its candidate, when a closed window shows the candidate failing or
    disagreeing past its bound; None when nothing must change."""
    if entry is None or entry.candidate is None:
        return None
    candidate = entry.candidate
    why = None
    rate = report.get("candidate_failure_rate")
    if (
        candidate.role == "canary"
        and report["model"]["version"] == candidate.version
        and rate is not None
        and rate > max_failure_rate
    ):
        why = f"canary version {candidate.version} failed {rate:.1%} of its requests"
    shadow = report.get("shadow") or {}
    agreement = shadow.get("agreement")
    if (
        candidate.role == "shadow"
        and shadow.get("version") == candidate.version
        and agreement is not None
        and agreement < min_agreement
    ):
        why = f"shadow version {candidate.version} agreed on only {agreement:.1%} of labels"
    if why is None:
        return None
    return entry.revise(candidate=None, event="auto_rollback", by=by, at=at, note=why)


class RegistryReader:
    """Follows the registry topic from its beginning and keeps the latest entry per model.

    `ready()` starts the reader on first use and returns once everything already on the topic
    has been read, so a worker never labels a message before it knows which version serves.
    Records are judged as they come (`judge`); `history` keeps the latest decisions.
    """

    def __init__(
        self, bootstrap_servers: str, topic: str, security: Mapping[str, Any] | None = None
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.security = dict(security or {})
        self.entries: dict[str, ModelEntry] = {}
        self.history: deque[Decision] = deque(maxlen=1000)
        self._task: asyncio.Task | None = None
        self._caught_up = asyncio.Event()

    def get(self, model: str) -> ModelEntry | None:
        return self.entries.get(model)

    async def ready(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name=f"registry:{self.topic}")
        waiter = asyncio.create_task(self._caught_up.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # the reader died: raise its error here

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One registry record: an entry replaces the model's, a tombstone removes it."""
        if key is None:
            return
        model = key.decode("utf-8")
        if value is None:
            self.entries.pop(model, None)
            return
        try:
            entry = ModelEntry.model_validate_json(value)
        except ValueError as exc:
            log.error("registry_record_invalid", model=model, error=str(exc))
            return
        previous = self.entries.get(model)
        verdict = judge(previous, entry)
        if verdict is None:
            return
        held = previous.revision if previous else None
        self.history.append(Decision(entry, verdict, held))
        if not verdict:
            log.warning(
                "registry_write_rejected",
                model=model,
                change=entry.event,
                by=entry.by,
                base=entry.base,
                revision=held,
            )
            return
        self.entries[model] = entry
        log.info(
            "registry_update",
            model=model,
            change=entry.event,
            revision=entry.revision,
            active=entry.active,
            candidate=entry.candidate.model_dump() if entry.candidate else None,
        )

    def decision(self, entry: ModelEntry) -> Decision | None:
        """How the readers judged `entry`, once this reader has read it."""
        wanted = entry.model_dump()
        return next((d for d in self.history if d.entry.model_dump() == wanted), None)

    async def settle(self, entry: ModelEntry, timeout_s: float = 30.0) -> Decision:
        """Wait until this reader has read and judged `entry` (a record just written)."""
        await self.ready()
        deadline = time.monotonic() + timeout_s
        while (found := self.decision(entry)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"registry record of {entry.model!r} not read back")
            await asyncio.sleep(0.05)
        return found

    async def close(self) -> None:
        """Stop following the topic."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
            **self.security,
        )
        try:
            # stop() also closes what a failed start() left open (no unclosed-client warnings)
            await consumer.start()
            partitions = [
                TopicPartition(self.topic, p)
                for p in sorted(await partitions_of(consumer, self.topic))
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    for message in messages:
                        self.apply(message.key, message.value)
                if not self._caught_up.is_set() and await reached_end(consumer, end):
                    self._caught_up.set()
                    log.info("registry_ready", topic=self.topic, models=sorted(self.entries))
        finally:
            await consumer.stop()


async def read_registry(
    bootstrap_servers: str, topic: str, security: Mapping[str, Any] | None = None
) -> dict[str, ModelEntry]:
    """The registry as it is now (for the trainer's commands)."""
    reader = RegistryReader(bootstrap_servers, topic, security)
    try:
        await reader.ready()
        return dict(reader.entries)
    finally:
        await reader.close()


async def write_entry(
    bootstrap_servers: str,
    topic: str,
    entry: ModelEntry,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Publish a model's new entry, then read the registry back: raises `StaleRevision` when
    the readers rejected it, after re-publishing the entry that won."""
    reader = RegistryReader(bootstrap_servers, topic, security)
    try:
        await _send(bootstrap_servers, topic, entry, security)
        decided = await reader.settle(entry)
        if not decided.accepted:
            current = reader.get(entry.model)
            if current is not None:
                await _send(bootstrap_servers, topic, current, security)
            raise StaleRevision(entry, current)
    finally:
        await reader.close()


def record_of(entry: ModelEntry) -> tuple[bytes, bytes]:
    """The registry topic's key and value for `entry`."""
    return entry.model.encode("utf-8"), entry.model_dump_json().encode("utf-8")


async def _send(
    bootstrap_servers: str, topic: str, entry: ModelEntry, security: Mapping[str, Any] | None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", **(security or {}))
    try:
        # stop() also closes what a failed start() left open (no unclosed-client warnings)
        await producer.start()
        key, value = record_of(entry)
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()
