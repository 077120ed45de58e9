"""The exactly-once commit protocol (`TxnPublisher`, `TxnProducers`) against a fake broker that
keeps the committed offset: every failure ends committed once, or released, never twice.

The fake transactional producers record each call in one shared log, so the order of a
transaction's steps and the producers' lives (start = InitProducerId, stop) can be read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

from tests.unit.test_batch_producer import FakeProducer, records
from worker.messages import OutRecord
from worker.transactions import TxnPublisher, settle
from worker.txn_producers import TxnProducers

SOURCE = "news.raw"


class Broker:
    """Committed offsets, and failures to inject: `faults[step]` is a list of what the next
    calls of that step do ("raise" an error, "lost": commit, then raise; "hang")."""

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}
        self.log: list[tuple] = []
        self.faults: dict[str, list[tuple[str, BaseException | None]]] = {}
        self.produce_faults: dict[bytes, BaseException] = Once()
        self.read_faults: list[BaseException] = []
        self.moved_on_read: int | None = None

    async def step(self, name: str, apply: Callable[[], None] = lambda: None) -> None:
        self.log.append((name,))
        pending = self.faults.get(name) or []
        if not pending:
            apply()
            return
        what, error = pending.pop(0)
        if what == "hang":
            await asyncio.sleep(3600)
        if what == "lost":
            apply()
        raise error


class Once(dict):
    """Produce faults by record value, each error in its list used once: the broker takes the
    record when they are used up."""

    def __getitem__(self, key: bytes) -> BaseException:
        errors = super().__getitem__(key)
        error = errors.pop(0)
        if not errors:
            del self[key]
        return error


class FakeTxnProducer(FakeProducer):
    def __init__(self, broker: Broker, transactional_id: str) -> None:
        super().__init__(fail=broker.produce_faults)
        self.broker = broker
        self.id = transactional_id
        self.offsets: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self.broker.log.append(("start", self.id))

    async def stop(self) -> None:
        self.broker.log.append(("stop", self.id))

    async def begin_transaction(self) -> None:
        self.offsets = {}
        await self.broker.step("begin")

    async def send_batch(self, batch, topic: str, *, partition: int):
        self.broker.log.append(("send", topic, [value for _, value, _ in batch.records]))
        return await super().send_batch(batch, topic, partition=partition)

    async def send_offsets_to_transaction(self, offsets, group_id: str) -> None:
        assert all(type(tp) is TopicPartition for tp in offsets)  # a Faust TP fails in aiokafka
        self.offsets = dict(offsets)
        self.broker.log.append(("offsets", {tp.partition: o for tp, o in offsets.items()}))

    async def commit_transaction(self) -> None:
        def apply() -> None:
            for tp, offset in self.offsets.items():
                self.broker.committed[tp.partition] = offset

        await self.broker.step("commit", apply)


class FakeOffsets:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def committed(self, topic: str, partition: int) -> int | None:
        self.broker.log.append(("read_offset",))
        if self.broker.read_faults:
            raise self.broker.read_faults.pop(0)
        if self.broker.moved_on_read is not None:
            self.broker.committed[partition] = self.broker.moved_on_read
        return self.broker.committed.get(partition)

    async def close(self) -> None:
        return None


def publisher(broker: Broker, rejoins: list | None = None) -> tuple[TxnPublisher, TxnProducers]:
    producers = TxnProducers(
        SOURCE, "app", lambda tid: FakeTxnProducer(broker, tid), step_timeout_s=0.2
    )
    txn = TxnPublisher(
        producers,
        FakeOffsets(broker),
        group_id="app",
        max_request_bytes=1_000_000,
        step_timeout_s=0.2,
        rejoin=lambda: (rejoins if rejoins is not None else []).append("rejoin"),
        retry_initial_s=0.001,
        retry_max_s=0.001,
    )
    return txn, producers


def steps(broker: Broker) -> list[str]:
    return [entry[0] for entry in broker.log]


def sent_values(broker: Broker) -> list[bytes]:
    return [value for entry in broker.log if entry[0] == "send" for value in entry[2]]


def refused_as_dead_letter(record: OutRecord, error: BaseException) -> OutRecord:
    return OutRecord("dl", record.key, b"dead:" + record.value)


async def test_a_batch_commits_its_records_and_next_offset_in_one_transaction_in_order():
    broker = Broker()
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (10, 14), records(4))
    assert outcome == "committed"
    assert broker.committed == {0: 14}
    assert ("offsets", {0: 14}) in broker.log
    order = steps(broker)
    assert order.count("begin") == order.count("commit") == order.count("offsets") == 1
    assert order.index("begin") < order.index("send") < order.index("commit")
    assert order.index("offsets") < order.index("commit")
    assert sorted(sent_values(broker)) == sorted(r.value for r in records(4))


async def test_a_failed_produce_abandons_the_transaction_and_a_new_producer_sends_it_all():
    broker = Broker()
    broker.produce_faults = Once({b"v2": [KafkaTimeoutError()]})
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (0, 4), records(4))
    assert outcome == "committed"
    order = steps(broker)
    first_commit = order.index("commit")
    assert "commit" not in order[: order.index("stop")], "the failed one was never committed"
    assert order.count("start") == 2, "the abandoned transaction's producer was replaced"
    assert order.index("stop") < first_commit
    after = [e for e in broker.log[order.index("stop") :] if e[0] == "send"]
    assert sorted(v for e in after for v in e[2]) == [b"v0", b"v1", b"v2", b"v3"]
    assert broker.committed == {0: 4}


async def test_a_record_refused_for_good_becomes_its_dead_letter_in_the_next_transaction():
    broker = Broker()
    broker.produce_faults = {b"v1": MessageSizeTooLargeError()}  # refused every time
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (0, 3), records(3), refused_as_dead_letter)
    assert outcome == "committed"
    last = broker.log[max(i for i, e in enumerate(broker.log) if e[0] == "begin") :]
    values = sorted(v for e in last if e[0] == "send" for v in e[2])
    assert values == [b"dead:v1", b"v0", b"v2"], "only the refused record is a dead letter"
    assert steps(broker).count("commit") == 1


async def test_a_commit_whose_answer_was_lost_is_not_sent_again():
    broker = Broker()
    broker.faults["commit"] = [("lost", KafkaError("Unexpected error during batch delivery"))]
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (5, 9), records(4))
    assert outcome == "already_committed"
    assert broker.committed == {0: 9}
    assert steps(broker).count("begin") == 1
    assert len(sent_values(broker)) == 4
    order = steps(broker)
    assert order.index("stop") < order.index("read_offset"), "offset read after the new InitPID"


async def test_a_commit_that_did_not_happen_is_sent_again_and_commits_once():
    broker = Broker()
    broker.committed[0] = 5
    broker.faults["commit"] = [("raise", KafkaError("coordinator gone"))]
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (5, 9), records(4))
    assert outcome == "committed"
    assert broker.committed == {0: 9}
    assert steps(broker).count("begin") == 2


async def test_a_commit_past_the_step_timeout_is_settled_like_any_failure():
    broker = Broker()
    broker.faults["commit"] = [("hang", None)]
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (0, 2), records(2))
    assert outcome == "committed"
    assert steps(broker).count("read_offset") == 1


async def test_no_record_is_sent_again_until_the_committed_offset_could_be_read():
    broker = Broker()
    broker.faults["commit"] = [("lost", KafkaError("broker gone"))]
    broker.read_faults = [KafkaTimeoutError(), KafkaTimeoutError()]
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (0, 3), records(3))
    assert outcome == "already_committed"
    assert steps(broker).count("read_offset") == 3
    assert steps(broker).count("begin") == 1 and len(sent_values(broker)) == 3


async def test_a_fenced_producer_releases_its_batch_blocks_the_partition_and_rejoins():
    broker = Broker()
    broker.faults["commit"] = [("raise", ProducerFenced())]
    rejoins: list = []
    txn, producers = publisher(broker, rejoins)
    await producers.assign([0])
    assert await txn.commit_batch(0, (0, 2), records(2)) == "released"
    assert rejoins == ["rejoin"]
    assert steps(broker).count("start") == 1, "a zombie never re-initialises its id"
    assert await txn.commit_batch(0, (2, 4), records(2)) == "released"
    assert steps(broker).count("begin") == 1, "later batches of the partition are released"
    await producers.assign([0])  # the rejoin's assignment: owned again, a fresh producer
    assert await txn.commit_batch(0, (0, 2), records(2)) == "committed"
    assert broker.committed == {0: 2}


async def test_an_offset_moved_by_another_owner_releases_the_batch_and_rejoins():
    broker = Broker()
    broker.committed[0] = 10
    broker.faults["commit"] = [("raise", KafkaError("coordinator gone"))]
    broker.moved_on_read = 15  # another owner committed part of this batch meanwhile
    rejoins: list = []
    txn, producers = publisher(broker, rejoins)
    await producers.assign([0])
    assert await txn.commit_batch(0, (10, 20), records(3)) == "released"
    assert rejoins == ["rejoin"]
    assert broker.committed == {0: 15}
    assert steps(broker).count("begin") == 1


async def test_a_partition_not_assigned_is_released_without_a_transaction():
    broker = Broker()
    txn, producers = publisher(broker)
    await producers.assign([1])
    assert await txn.commit_batch(0, (0, 2), records(2)) == "released"
    assert "begin" not in steps(broker)


@pytest.mark.parametrize(
    ("committed", "expected"),
    [
        (None, "retry"),
        (5, "retry"),
        (3, "retry"),  # below the batch: offsets without records (markers) before it
        (10, "already_committed"),
        (7, "resync"),
        (12, "resync"),
    ],
)
def test_settle_reads_what_a_failed_attempt_did_from_the_committed_offset(committed, expected):
    assert settle(committed, first=5, end=10) == expected


async def test_an_assignment_fences_with_a_fresh_producer_per_held_partition():
    broker = Broker()
    _, producers = publisher(broker)
    await producers.assign([0, 1])
    await producers.assign([1, 2])
    starts = [e[1] for e in broker.log if e[0] == "start"]
    stops = [e[1] for e in broker.log if e[0] == "stop"]
    assert starts == ["app-eos-news.raw-0", "app-eos-news.raw-1"] * 1 + [
        "app-eos-news.raw-1",
        "app-eos-news.raw-2",
    ]
    assert sorted(stops) == ["app-eos-news.raw-0", "app-eos-news.raw-1"]
    assert not producers.owns(0) and producers.owns(1) and producers.owns(2)
    await producers.close()
    assert not producers.owns(1)


async def test_a_producer_state_error_on_a_record_sends_it_again_never_as_a_dead_letter():
    broker = Broker()
    broker.produce_faults = Once({b"v1": [OutOfOrderSequenceNumber()] * 2})  # not retriable
    txn, producers = publisher(broker)
    await producers.assign([0])
    outcome = await txn.commit_batch(0, (0, 3), records(3), refused_as_dead_letter)
    assert outcome == "committed"
    assert not [v for v in sent_values(broker) if v.startswith(b"dead:")]
    assert steps(broker).count("start") == 3
