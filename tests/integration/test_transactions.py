"""What exactly-once output (issue 18) rests on, checked on the real broker: aiokafka 0.14's
transactional producer (it speaks only v0 of the transaction requests) against Kafka 4.x, and
our reading tools on read_committed.

- a committed transaction's records and its consumer-group offsets appear together; an aborted
  one's do not, for a read_committed reader (`worker.client.read_topics`, behind `worker tail`);
- a second producer with the same transactional_id fences the first (the zombie fencing a
  transactional id per input partition relies on).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from devstack.local import LocalStack
from tests.integration.faults import collect, ids, messages, outcome, wait_committed
from worker.client import partitions_of, produce, read_topics
from worker.settings import WorkerSettings
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration


def one_partition(stack: LocalStack) -> WorkerSettings:
    return stack.settings.model_copy(update={"topic_partitions": 1})


async def transactions(bootstrap: str, source: str, sink: str, group: str) -> None:
    """Commit, abort, commit: one record and the source offset after it in each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{group}-0")
    await producer.start()
    try:
        for offset, commit in ((1, True), (2, False), (3, True)):
            await producer.begin_transaction()
            await producer.send_and_wait(sink, f"batch-{offset}".encode())
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): offset}, group)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


async def committed_offset(bootstrap: str, source: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(source, 0))
    finally:
        await consumer.stop()


def test_read_committed_sees_committed_transactions_with_their_offsets_and_no_aborted_one(
    stack: LocalStack,
) -> None:
    tag = uuid.uuid4().hex[:8]
    source, sink, group = f"txn.src.{tag}", f"txn.sink.{tag}", f"txn-group-{tag}"
    bootstrap = stack.settings.kafka_bootstrap_servers
    asyncio.run(ensure_topics(one_partition(stack), [source, sink]))

    asyncio.run(transactions(bootstrap, source, sink, group))

    committed = asyncio.run(read_topics(bootstrap, [sink], timeout_s=30))
    everything = asyncio.run(
        read_topics(bootstrap, [sink], timeout_s=30, isolation_level="read_uncommitted")
    )
    assert [r.value for r in committed] == [b"batch-1", b"batch-3"]
    assert [r.value for r in everything] == [b"batch-1", b"batch-2", b"batch-3"]
    assert asyncio.run(committed_offset(bootstrap, source, group)) == 3


async def zombie_commit(bootstrap: str, sink: str, transactional_id: str) -> type[Exception]:
    """Start a producer, let a newer one with the same id start, then try to commit: the error."""
    zombie = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await zombie.start()
    successor = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    try:
        await zombie.begin_transaction()
        await zombie.send_and_wait(sink, b"before the successor")
        await successor.start()  # InitProducerId: bumps the epoch, aborts the open transaction
        try:
            await zombie.send_and_wait(sink, b"after the successor")
            await zombie.commit_transaction()
        except ProducerFenced as error:
            return type(error)
        raise AssertionError("the zombie committed after a newer producer took its id")
    finally:
        await successor.stop()
        await asyncio.wait_for(zombie.stop(), 30)


def test_a_newer_producer_with_the_same_transactional_id_fences_the_old_one(
    stack: LocalStack,
) -> None:
    tag = uuid.uuid4().hex[:8]
    sink = f"txn.fence.{tag}"
    bootstrap = stack.settings.kafka_bootstrap_servers
    asyncio.run(ensure_topics(one_partition(stack), [sink]))

    assert asyncio.run(zombie_commit(bootstrap, sink, f"fence-{tag}")) is ProducerFenced
    assert asyncio.run(read_topics(bootstrap, [sink], timeout_s=30)) == []


async def end_offsets(bootstrap: str, topic: str) -> int:
    """Sum of the topic's partition end offsets: records and transaction markers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


def test_an_exactly_once_worker_commits_outputs_and_offsets_in_its_transactions(
    routes_settings, start_worker
):
    """The real path of PROCESSING_GUARANTEE=exactly_once (its crash cases are in `make
    chaos`): every input once, a bad one as its dead letter, the group's offsets committed to
    the end, and the sink written in transactions (their commit markers take offsets)."""
    settings = routes_settings.model_copy(update={"processing_guarantee": "exactly_once"})
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = [*messages("eos", "news", 300), (b"eos-bad", b"{not json")]
    start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch)
        labelled, dead = await collect(
            bootstrap, [news.sink], settings.deadletter_topic, ids(batch)
        )
        left = await wait_committed(bootstrap, settings.app_id, [news.source], timeout_s=30)
        return labelled, dead, left, await end_offsets(bootstrap, news.sink)

    labelled, dead, left, sink_end = asyncio.run(scenario())
    result = outcome("exactly-once worker, no fault", ids(batch), labelled, dead)
    assert (result.labelled, result.dead_lettered, result.duplicates, result.lost) == (300, 1, 0, 0)
    assert left == 0, "the transactions committed the source offsets to the end"
    assert sink_end > 300, "no commit marker: the sink was not written in transactions"
