"""Counting every message of a fault case by id: labelled + dead-lettered = sent, nothing lost.

Each fault test sends messages whose key is their id, injects its fault, waits until every id
has an output record (or the time runs out), and records an `Outcome` row; the rows are printed
at the end of the run (the README's fault table is copied from there).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.integration.data import texts
from worker.client import Record, partitions_of, read_topics

OUTCOMES: list[dict] = []


@dataclass
class Outcome:
    case: str
    sent: int
    labelled: int
    dead_lettered: int
    duplicates: int
    lost: int

    def record(self) -> Outcome:
        OUTCOMES.append(asdict(self))
        return self


def messages(prefix: str, task: str, count: int) -> list[tuple[bytes, bytes]]:
    """Valid messages with real texts, keyed by their id."""
    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": t}))
        for i, t in enumerate(texts(task, count))
    ]


def ids(batch: list[tuple[bytes, bytes]]) -> set[str]:
    return {key.decode() for key, _ in batch}


async def collect(
    bootstrap: str,
    sinks: list[str],
    deadletter: str,
    wanted: set[str],
    *,
    timeout_s: float = 180.0,
    settle_s: float = 3.0,
) -> tuple[list[Record], list[Record]]:
    """Read sinks and dead letters until every wanted id has an output (then `settle_s` more,
    so duplicates written late are counted too)."""
    deadline = time.monotonic() + timeout_s
    while True:
        labelled = await read_topics(bootstrap, sinks)
        dead = await read_topics(bootstrap, [deadletter])
        if wanted <= _labelled_ids(labelled) | _dead_ids(dead) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(settle_s)
    return await read_topics(bootstrap, sinks), await read_topics(bootstrap, [deadletter])


def outcome(case: str, wanted: set[str], labelled: list[Record], dead: list[Record]) -> Outcome:
    """Counts over the wanted ids only (other tests' records are not ours)."""
    counts = Counter(i for i in [*_labelled_list(labelled), *_dead_list(dead)] if i in wanted)
    return Outcome(
        case=case,
        sent=len(wanted),
        labelled=sum(1 for i in _labelled_list(labelled) if i in wanted),
        dead_lettered=sum(1 for i in _dead_list(dead) if i in wanted),
        duplicates=sum(c - 1 for c in counts.values()),
        lost=len(wanted - set(counts)),
    ).record()


async def uncommitted(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages on `topics` beyond the group's committed offsets (0 = all committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in await partitions_of(consumer, topic)
        ]
        end = await consumer.end_offsets(partitions)
        return sum(
            offset - (committed[tp].offset if tp in committed else 0) for tp, offset in end.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


async def wait_committed(bootstrap: str, group: str, topics: list[str], timeout_s: float) -> int:
    """Poll until every message on `topics` is committed; returns what is left at the end."""
    deadline = time.monotonic() + timeout_s
    left = await uncommitted(bootstrap, group, topics)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        left = await uncommitted(bootstrap, group, topics)
    return left


async def wait_labelled(bootstrap: str, sinks: list[str], at_least: int, timeout_s: float = 120):
    """Wait until the sinks hold at least `at_least` records."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(await read_topics(bootstrap, sinks)) >= at_least:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} labelled within {timeout_s} s")


async def stable_group(bootstrap: str, group: str, members: int, timeout_s: float = 120) -> None:
    """Wait until `group` is Stable with `members` members (and they have resumed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:  # the coordinator answers once the group exists
                described = await admin.describe_consumer_groups([group])
            except KafkaError:
                await asyncio.sleep(0.5)
                continue
            _, _, state, _, _, found = described[0].groups[0][:6]
            if state == "Stable" and len(found) == members:
                await asyncio.sleep(2.0)  # both have finished recovery and resumed
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"group {group} not stable with {members} members")
    finally:
        await admin.close()


def _labelled_list(records: list[Record]) -> list[str]:
    return [orjson.loads(r.value)["id"] for r in records]


def _labelled_ids(records: list[Record]) -> set[str]:
    return set(_labelled_list(records))


def _dead_list(records: list[Record]) -> list[str]:
    return [r.key.decode(errors="replace") for r in records if r.key is not None]


def _dead_ids(records: list[Record]) -> set[str]:
    return set(_dead_list(records))
