"""`publish` through a fake sender (one send per record to fake topics): what the broker acks
stays sent, transient failures are sent again (only they), records refused for good become
their input's dead letter."""

import asyncio

from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from worker.messages import OutRecord, RawMessage
from worker.publishing import Outcomes, publish

ORIGIN = RawMessage("news.raw", 0, 7, b"k", b"{}", 0.0)


class FakeTopic:
    """Acks every send, except those whose value is in `fail` (error, times left)."""

    def __init__(self, fail: dict[bytes, list] | None = None) -> None:
        self.fail = fail or {}
        self.sent: list[tuple[bytes, list]] = []

    async def send(self, *, key, value, headers):
        self.sent.append((value, headers))
        future = asyncio.get_running_loop().create_future()
        error, left = self.fail.get(value, (None, 0))
        if left:
            self.fail[value][1] -= 1
            future.set_exception(error)
        else:
            future.set_result("ok")
        return future


def per_record_sender(topics: dict[str, FakeTopic]):
    """A `send_all` that sends each record on its fake topic and awaits the acks."""

    async def send_all(records) -> Outcomes:
        futures = [
            await topics[r.topic].send(key=r.key, value=r.value, headers=list(r.headers))
            for r in records
        ]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    return send_all


def record(value: bytes, topic: str = "sink") -> OutRecord:
    return OutRecord(topic, b"k", value, (("traceparent", b"t"),), origin=ORIGIN)


def dead(rec: OutRecord, exc: BaseException) -> OutRecord:
    return OutRecord("dl", rec.key, b"dead:" + rec.value, origin=rec.origin)


async def test_transient_failure_resends_only_that_record():
    sink = FakeTopic({b"b": [KafkaTimeoutError(), 2]})
    await publish(
        [record(b"a"), record(b"b"), record(b"c")],
        per_record_sender({"sink": sink, "dl": FakeTopic()}),
        refused=dead,
        retry_initial_s=0.001,
        retry_max_s=0.001,
    )
    assert [value for value, _ in sink.sent] == [b"a", b"b", b"c", b"b", b"b"]
    assert sink.sent[0][1] == [("traceparent", b"t")]


async def test_refused_for_good_becomes_a_dead_letter():
    sink = FakeTopic(
        {b"big": [MessageSizeTooLargeError(), 1], b"secret": [TopicAuthorizationFailedError(), 1]}
    )
    deadletters = FakeTopic()
    await publish(
        [record(b"big"), record(b"ok"), record(b"secret")],
        per_record_sender({"sink": sink, "dl": deadletters}),
        refused=dead,
        retry_initial_s=0.001,
        retry_max_s=0.001,
    )
    assert [value for value, _ in sink.sent] == [b"big", b"ok", b"secret"]
    assert sorted(value for value, _ in deadletters.sent) == [b"dead:big", b"dead:secret"]


async def test_unknown_errors_are_sent_again_not_dead_lettered():
    sink = FakeTopic({b"a": [RuntimeError("producer restarting"), 1]})
    deadletters = FakeTopic()
    await publish(
        [record(b"a")],
        per_record_sender({"sink": sink, "dl": deadletters}),
        refused=dead,
        retry_initial_s=0.001,
        retry_max_s=0.001,
    )
    assert [value for value, _ in sink.sent] == [b"a", b"a"] and not deadletters.sent
