"""Small aiokafka helpers for users, the demo and tests: produce messages, read a topic back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


async def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Sequence]],
    *,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Send (key, value) or (key, value, headers) tuples and wait for every acknowledgement;
    returns the count sent.

    `security`: `worker.security.kafka_client_kwargs(settings)` for TLS/SASL brokers.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, **(security or {})
    )
    try:
        # stop() also closes what a failed start() left open (no unclosed-client warnings)
        await producer.start()
        futures = [
            await producer.send(topic, value=m[1], key=m[0], headers=list(m[2]) if m[2:] else None)
            for m in messages
        ]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_topics(
    bootstrap_servers: str,
    topics: list[str],
    *,
    expect: int | None = None,
    timeout_s: float = 60.0,
    settle_s: float = 0.0,
    security: Mapping[str, Any] | None = None,
    isolation_level: str = "read_committed",
    require_end: bool = False,
) -> list[Record]:
    """Read the topics from the beginning until `expect` records arrived (or the timeout).

    With `settle_s`, keep reading that long after reaching `expect`, so extra records
    (duplicates) are seen too. Without `expect`, read what is there now: up to the last stable
    offset under read_committed (records of aborted transactions are skipped, and an open
    transaction's records are not there yet). With `require_end` (and no `expect`), not getting
    there within `timeout_s` raises TimeoutError instead of returning part of the topics.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level=isolation_level,
        **(security or {}),
    )
    try:
        # stop() also closes what a failed start() left open (no unclosed-client warnings)
        await consumer.start()
        partitions = await assign_from_beginning(consumer, topics)
        end = await consumer.end_offsets(partitions) if expect is None else None
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if end is not None and await reached_end(consumer, end):
                break
            if expect is not None and len(records) >= expect:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                records.extend(
                    Record(tp.topic, tp.partition, m.offset, m.key, m.value, tuple(m.headers))
                    for m in messages
                )
        if require_end and end is not None and not await reached_end(consumer, end):
            raise TimeoutError(f"{topics} not read to their end offsets within {timeout_s} s")
        return records
    finally:
        await consumer.stop()


async def assign_from_beginning(
    consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> list[TopicPartition]:
    """Assign every partition of `topics` (no group) and read them from their first offset."""
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(await partitions_of(consumer, topic))
    ]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return partitions


async def reached_end(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        # aiokafka's public `topics()` does not keep partition metadata; its client does.
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        partitions = cluster.partitions_for_topic(topic)
        if partitions:
            return partitions
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic!r} does not exist")
