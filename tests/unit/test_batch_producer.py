"""`BatchProducer`: one produce batch and one future per topic partition, records in order, on
the partition aiokafka's own `send` picks, and a refused batch narrowed down to its record."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from worker.messages import OutRecord
from worker.publishing import BatchProducer

PARTITIONS = {"sink": {0, 1, 2, 3}, "dl": {0}}


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes | None, bytes, list]] = []

    def append(self, *, key, value, timestamp, headers):
        if self.records and len(self.records) >= self.room:
            return None
        self.records.append((key, value, headers))
        return object()


class FakeProducer:
    """Records every `send_batch`; fails the batches whose values contain a `fail` key."""

    def __init__(self, room: int = 1000, fail: dict[bytes, BaseException] | None = None) -> None:
        self.room = room
        self.fail = fail or {}
        self.sent: list[tuple[str, int, list[bytes]]] = []
        self.client = SimpleNamespace(
            cluster=SimpleNamespace(available_partitions_for_topic=lambda t: PARTITIONS[t])
        )

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def partitions_for(self, topic: str) -> set[int]:
        return PARTITIONS[topic]

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int):
        values = [value for _, value, _ in batch.records]
        self.sent.append((topic, partition, values))
        future = asyncio.get_running_loop().create_future()
        errors = [self.fail[v] for v in values if v in self.fail]
        if errors:
            future.set_exception(errors[0])
        else:
            future.set_result(None)
        return future


def records(count: int, topic: str = "sink") -> list[OutRecord]:
    return [OutRecord(topic, f"id-{i}".encode(), f"v{i}".encode()) for i in range(count)]


def aiokafka_partition(key: bytes, topic: str = "sink") -> int:
    everything = sorted(PARTITIONS[topic])
    return DefaultPartitioner()(key, everything, everything)


async def test_one_batch_per_partition_in_record_order_on_aiokafkas_partition():
    producer = FakeProducer()
    batch = records(40) + records(3, "dl")
    outcomes = await BatchProducer(lambda: producer, 1_000_000).send_all(batch)
    assert outcomes == [None] * 43
    assert len(producer.sent) == len({(t, p) for t, p, _ in producer.sent})  # one per partition
    for topic, partition, values in producer.sent:
        expected = [r.value for r in batch if r.topic == topic]
        expected = [v for v in expected if aiokafka_partition(b"id-" + v[1:], topic) == partition]
        assert values == expected
    assert sum(len(values) for _, _, values in producer.sent) == 43


async def test_a_full_batch_continues_in_a_new_one_for_the_same_partition():
    producer = FakeProducer(room=2)
    batch = [OutRecord("sink", b"same-key", f"v{i}".encode()) for i in range(5)]
    assert await BatchProducer(lambda: producer, 1_000_000).send_all(batch) == [None] * 5
    assert [values for _, _, values in producer.sent] == [[b"v0", b"v1"], [b"v2", b"v3"], [b"v4"]]


async def test_a_refused_batch_is_resent_record_by_record_so_only_the_culprit_fails():
    producer = FakeProducer(fail={b"v1": MessageSizeTooLargeError()})
    batch = [OutRecord("sink", b"same-key", f"v{i}".encode()) for i in range(3)]
    outcomes = await BatchProducer(lambda: producer, 1_000_000).send_all(batch)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], MessageSizeTooLargeError)


async def test_a_transient_failure_fails_the_whole_batch_for_a_retry():
    producer = FakeProducer(fail={b"v1": KafkaTimeoutError()})
    batch = [OutRecord("sink", b"same-key", f"v{i}".encode()) for i in range(3)]
    outcomes = await BatchProducer(lambda: producer, 1_000_000).send_all(batch)
    assert all(isinstance(o, KafkaTimeoutError) for o in outcomes)
    assert len(producer.sent) == 1


async def test_a_record_over_the_request_limit_is_refused_before_sending():
    producer = FakeProducer()
    batch = [OutRecord("sink", b"k", b"x" * 2000), OutRecord("sink", b"k", b"small")]
    outcomes = await BatchProducer(lambda: producer, 1000).send_all(batch)
    assert isinstance(outcomes[0], MessageSizeTooLargeError) and outcomes[1] is None
    assert [values for _, _, values in producer.sent] == [[b"small"]]


async def test_records_without_a_key_go_out_beside_keyed_ones_on_an_available_partition():
    producer = FakeProducer()
    batch = [
        OutRecord("sink", None, b"no-key-0"),
        *records(5),
        OutRecord("sink", None, b"no-key-1"),
    ]
    assert await BatchProducer(lambda: producer, 1_000_000).send_all(batch) == [None] * 7
    sent = {value: partition for _, partition, values in producer.sent for value in values}
    assert sorted(sent) == sorted(r.value for r in batch)
    assert {sent[b"no-key-0"], sent[b"no-key-1"]} <= PARTITIONS["sink"]
    for record in batch[1:6]:
        assert sent[record.value] == aiokafka_partition(record.key)
