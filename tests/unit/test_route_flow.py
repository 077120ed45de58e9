"""One route's loop without Faust: batches in, records published, then events acknowledged."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from tests.unit.test_pipeline import ROUTE, FakeClassifier, settings
from worker import metrics
from worker.messages import OutRecord
from worker.pipeline import Pipeline
from worker.route_flow import RouteFlow


class Event:
    """A Faust event as the flow sees it: its message, and `ack`, which is logged."""

    def __init__(self, offset: int, log: list, text: str = "some news", partition: int = 0):
        value = orjson.dumps({"id": f"m{offset}", "text": text})
        self.message = SimpleNamespace(
            topic=ROUTE.source,
            partition=partition,
            offset=offset,
            key=f"m{offset}".encode(),
            value=value,
            timestamp=1_700_000_000.0,
            headers=[],
        )
        self.log = log

    def ack(self) -> None:
        self.log.append(("ack", self.message.offset))


def sender(log: list):
    async def send_all(records):
        log.extend(("sent", record.topic, record.key) for record in records)
        return [None] * len(records)

    return send_all


async def batches(*groups):
    for group in groups:
        yield group


async def test_every_event_is_acknowledged_only_after_its_record_is_published():
    log: list = []
    flow = RouteFlow(Pipeline(ROUTE, FakeClassifier(), settings()), sender(log), settings())
    await flow.run(batches([Event(0, log), Event(1, log)], [Event(2, log)]))
    sent = [entry for entry in log if entry[0] == "sent"]
    assert [key for _, _, key in sent] == [b"m0", b"m1", b"m2"]
    for offset in (0, 1, 2):
        assert log.index(("sent", ROUTE.sink, f"m{offset}".encode())) < log.index(("ack", offset))


async def test_extras_ride_with_the_batch_and_a_failing_message_is_its_own_dead_letter():
    log: list = []
    config = settings(inject_failure_text="poison")

    def extras(result):
        return [OutRecord("samples", b"news_topic", b"{}")]

    flow = RouteFlow(Pipeline(ROUTE, FakeClassifier(), config), sender(log), config, extras)
    await flow.run(batches([Event(0, log), Event(1, log, text="poison pill"), Event(2, log)]))
    topics = [entry[1] for entry in log if entry[0] == "sent"]
    assert topics.count(ROUTE.sink) == 2
    assert topics.count(config.deadletter_topic) == 1
    assert "samples" in topics
    assert [entry for entry in log if entry[0] == "ack"] == [("ack", 0), ("ack", 1), ("ack", 2)]


class RecordingTxn:
    """A `TxnPublisher` that logs each batch's transaction and answers `outcome`."""

    def __init__(self, log: list, outcome: str = "committed") -> None:
        self.log = log
        self.outcome = outcome

    async def commit_batch(self, partition, span, records, refused=None) -> str:
        self.log.append(("txn", partition, span, sorted(r.key for r in records)))
        return self.outcome


async def test_exactly_once_commits_each_partitions_batch_in_its_transaction_then_acks():
    log: list = []
    config = settings(processing_guarantee="exactly_once")
    flow = RouteFlow(
        Pipeline(ROUTE, FakeClassifier(), config), sender(log), config, txn=RecordingTxn(log)
    )
    mixed = [Event(0, log), Event(10, log, partition=1), Event(1, log), Event(11, log, partition=1)]
    await flow.run(batches(mixed))
    txns = [entry for entry in log if entry[0] == "txn"]
    assert sorted(txns) == [
        ("txn", 0, (0, 2), [b"m0", b"m1"]),
        ("txn", 1, (10, 12), [b"m10", b"m11"]),
    ]
    assert not [entry for entry in log if entry[0] == "sent"], "nothing outside a transaction"
    for offset in (0, 1, 10, 11):
        txn = next(i for i, e in enumerate(log) if e[0] == "txn" and f"m{offset}".encode() in e[3])
        assert txn < log.index(("ack", offset))


async def test_a_released_batch_is_acknowledged_and_counted_as_released():
    log: list = []
    config = settings(processing_guarantee="exactly_once")
    txn = RecordingTxn(log, outcome="released")
    flow = RouteFlow(Pipeline(ROUTE, FakeClassifier(), config), sender(log), config, txn=txn)
    before = metrics.TRANSACTIONS.labels(ROUTE.source, "released")._value.get()
    await flow.run(batches([Event(0, log), Event(1, log)]))
    assert [entry for entry in log if entry[0] == "ack"] == [("ack", 0), ("ack", 1)]
    assert metrics.TRANSACTIONS.labels(ROUTE.source, "released")._value.get() == before + 1


async def test_review_copies_ride_with_their_batch_before_the_ack():
    log: list = []
    route = ROUTE.model_copy(update={"review_below": 0.8})  # the fake answers 0.7
    flow = RouteFlow(Pipeline(route, FakeClassifier(), settings()), sender(log), settings())
    await flow.run(batches([Event(0, log)]))
    review = log.index(("sent", settings().review_topic, b"m0"))
    assert log.index(("sent", ROUTE.sink, b"m0")) < log.index(("ack", 0))
    assert review < log.index(("ack", 0))
