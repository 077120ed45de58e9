"""Publishing a finished batch: every record on Kafka, acknowledged, before its input is acked.

`BatchProducer` sends all records of a batch with one produce batch (aiokafka's
`create_batch`/`send_batch`) and one future per topic partition, instead of a Faust
`Topic.send` and an aiokafka future per record: the per-record send path was the largest share
of the worker's CPU (bench/README.md). Records keep their order within a partition, and go to
the partition aiokafka's own `send` would pick for their key.

`publish` wraps any sender with the error policy: transient failures are sent again with
backoff, forever, and only the failed records; a record the broker refuses for good becomes its
input's dead letter (`refused`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

import structlog
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.failures import is_refused_for_good
from worker.inference import backoff_delays
from worker.messages import OutRecord
from worker.partitioning import key_partitions

log = structlog.get_logger(__name__)

Outcomes = list[BaseException | None]
"""Per record, in order: the error it met, or None once the broker acknowledged it."""
SendAll = Callable[[Sequence[OutRecord]], Awaitable[Outcomes]]
Refused = Callable[[OutRecord, BaseException], OutRecord | None]


class Producer(Protocol):
    """The part of `aiokafka.AIOKafkaProducer` that batch sending uses."""

    client: object

    def create_batch(self): ...

    async def send_batch(self, batch, topic: str, *, partition: int) -> asyncio.Future: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class BatchProducer:
    """Sends a batch's records as one produce batch per topic partition.

    `producer` returns the live aiokafka producer (Faust's own, so one connection pool and one
    set of settings: acks, compression, TLS). `max_request_bytes` is the producer's request
    limit: a record above it is refused before sending, as aiokafka's `send` refuses it.
    `split_refused`: send each record of a produce batch the broker refused for good again
    alone, to find the one it refuses. Off inside a transaction: after a refused batch the
    transaction is aborted and its producer replaced (worker/transactions.py).
    """

    def __init__(
        self,
        producer: Callable[[], Producer],
        max_request_bytes: int,
        *,
        split_refused: bool = True,
    ) -> None:
        self._producer = producer
        self._max_request_bytes = max_request_bytes
        self._split_refused = split_refused
        self._partitioner = DefaultPartitioner()

    async def send_all(self, records: Sequence[OutRecord], alone: Collection[int] = ()) -> Outcomes:
        """Send every record; `alone`: indices of records that get a produce batch each."""
        producer = self._producer()
        outcomes: Outcomes = [None] * len(records)
        groups = await self._by_partition(producer, records, outcomes)
        sent = [
            (members, await producer.send_batch(batch, topic, partition=partition))
            for (topic, partition), indices in groups.items()
            for batch, members in self._batches(producer, records, indices, outcomes, alone)
        ]
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        retry: list[int] = []
        for (members, _), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if self._split_refused and len(members) > 1 and is_refused_for_good(result):
                retry.extend(members)  # find the record the broker refuses: one batch each
                continue
            for index in members:
                outcomes[index] = result
        if retry:
            alone = await asyncio.gather(*(self.send_all([records[i]]) for i in retry))
            for index, (outcome,) in zip(retry, alone, strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _by_partition(
        self, producer: Producer, records: Sequence[OutRecord], outcomes: Outcomes
    ) -> dict[tuple[str, int], list[int]]:
        """Record indices per (topic, partition), in record order; oversized ones refused."""
        by_topic: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
                record.key, record.value, list(record.headers)
            )
            if size > self._max_request_bytes:
                outcomes[index] = MessageSizeTooLargeError(
                    f"The message is {size} bytes when serialized which is larger than the "
                    "maximum request size (PRODUCER_MAX_REQUEST_BYTES)"
                )
                continue
            by_topic.setdefault(record.topic, []).append(index)
        groups: dict[tuple[str, int], list[int]] = {}
        for topic, indices in by_topic.items():
            everything, available = await self._partitions(producer, topic)
            keyed = [i for i in indices if records[i].key is not None]
            keys = [records[i].key or b"" for i in keyed]
            chosen = dict(zip(keyed, key_partitions(keys, everything), strict=True))
            for index in indices:
                partition = chosen.get(index)
                if partition is None:  # no key: a random available partition, as aiokafka
                    partition = self._partitioner(None, everything, available)
                groups.setdefault((topic, partition), []).append(index)
        return groups

    async def _partitions(self, producer: Producer, topic: str) -> tuple[list[int], list[int]]:
        everything = sorted(await producer.partitions_for(topic))
        available = producer.client.cluster.available_partitions_for_topic(topic)
        return everything, sorted(available or everything)

    @staticmethod
    def _batches(
        producer: Producer,
        records: Sequence[OutRecord],
        indices: list[int],
        outcomes: Outcomes,
        alone: Collection[int] = (),
    ):
        """Fill produce batches with the records in order; a new one when one is full, and
        one of its own for a record in `alone`."""
        batch, members = producer.create_batch(), []
        for index in indices:
            record = records[index]
            if index in alone and members:
                yield batch, members
                batch, members = producer.create_batch(), []
            headers = list(record.headers)
            appended = batch.append(
                key=record.key, value=record.value, timestamp=None, headers=headers
            )
            if appended is not None:
                members.append(index)
                if index in alone:
                    yield batch, members
                    batch, members = producer.create_batch(), []
                continue
            yield batch, members
            batch, members = producer.create_batch(), [index]
            appended = batch.append(
                key=record.key, value=record.value, timestamp=None, headers=headers
            )
            if appended is None:
                outcomes[index] = MessageSizeTooLargeError("record does not fit a batch")
                members = []
        if members:
            yield batch, members


async def publish(
    records: Sequence[OutRecord],
    send_all: SendAll,
    *,
    refused: Refused | None = None,
    retry_initial_s: float = 0.2,
    retry_max_s: float = 5.0,
) -> None:
    """Publish until the broker acknowledged every record. A record the broker refuses for
    good (too large, not authorised, ...) is replaced by `refused(record, error)`, its input's
    dead letter, where there is one; transient failures, and refusals `refused` has no answer
    for, are sent again with backoff, forever, and only the failed ones."""
    todo = list(records)
    delays = backoff_delays(retry_initial_s, retry_max_s)
    while todo:
        errors = await send_all(todo)
        again, failed = [], None
        for record, error in zip(todo, errors, strict=True):
            if error is None:
                continue
            replacement = None
            if refused is not None and is_refused_for_good(error):
                replacement = refused(record, error)
            if replacement is not None:
                log.error("record_refused", topic=record.topic, error=repr(error))
                again.append(replacement)
            else:
                again.append(record)
                failed = error
        if failed is not None:
            delay = next(delays)
            log.warning("publish_retry", records=len(again), error=repr(failed), retry_in_s=delay)
            await asyncio.sleep(delay)
        todo = again
