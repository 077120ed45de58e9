"""Exactly-once: a transactional producer per input partition, and the partitions this worker owns.

The transactional id names the input partition (`<app id>-eos-<topic>-<partition>`), so a worker
that takes a partition over fences whoever held it before: its InitProducerId bumps the id's
epoch and settles that id's open transaction, and the old owner's next request fails with
ProducerFenced. The id has to do the fencing: aiokafka's `send_offsets_to_transaction` takes a
group id only, not the group metadata of KIP-447 (aiokafka#844), so this is the scheme of
Kafka Streams' first exactly-once version. `assign` runs on every assignment before Faust seeks
the partitions to their committed offsets (`faust_fixes.BEFORE_SEEK`), so no transaction of an
old owner can still move an offset after the seek read it.

A producer is never reused after a failure it cannot explain: aiokafka never rewinds sequence
numbers and a sender error is fatal to it, so `replace` stops it and starts a new one with the
same id, whose InitProducerId aborts or completes what the old one left open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from worker.publishing import Producer
from worker.security import kafka_client_kwargs
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


class TxnProducer(Producer, Protocol):
    """The part of `aiokafka.AIOKafkaProducer` a transaction uses: batch sending
    (`publishing.Producer`) and the transaction calls."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def begin_transaction(self) -> None: ...

    async def commit_transaction(self) -> None: ...

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None: ...


ProducerFactory = Callable[[str], TxnProducer]


def producer_factory(settings: WorkerSettings) -> ProducerFactory:
    """aiokafka transactional producers with the worker's produce settings (acks=all forced)."""

    def new(transactional_id: str) -> TxnProducer:
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            transactional_id=transactional_id,
            transaction_timeout_ms=int(settings.transaction_timeout_s * 1000),
            acks="all",
            compression_type=settings.producer_compression,
            max_batch_size=settings.producer_batch_bytes,
            max_request_size=settings.producer_max_request_bytes,
            request_timeout_ms=int(settings.transaction_step_timeout_s * 1000),
            **kafka_client_kwargs(settings),
        )

    return new


class OffsetReader:
    """The group's committed offsets, read fresh from the coordinator.

    Its own consumer with the worker's group id that never subscribes, so it never joins the
    group; it lives on the agents' event loop (Faust's consumer runs in a thread of its own).
    """

    def __init__(self, settings: WorkerSettings, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, topic: str, partition: int) -> int | None:
        consumer = await self._started()
        return await asyncio.wait_for(
            consumer.committed(TopicPartition(topic, partition)), self._timeout_s
        )

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=self._settings.app_id,
                enable_auto_commit=False,
                **kafka_client_kwargs(self._settings),
            )
            try:
                await asyncio.wait_for(consumer.start(), self._timeout_s)
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer


async def stop_producer(producer: TxnProducer, timeout_s: float) -> None:
    """Stop within `timeout_s`; a producer that cannot flush (broker gone) is closed hard."""
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - it is being thrown away either way
        log.warning("txn_producer_stop_failed", error=repr(exc))
        sender = getattr(producer, "_sender", None)
        with contextlib.suppress(Exception):
            if sender is not None:
                await asyncio.wait_for(sender.close(), timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.client.close(), timeout_s)


class TxnProducers:
    """The transactional producers of one source topic's partitions that this worker owns.

    A partition is owned from the assignment that gave it until the next assignment without
    it, or until it is blocked (fenced, or its committed offset moved under it): a blocked
    partition's events are only released until the next assignment, which Faust seeks back to
    the committed offset.
    """

    def __init__(
        self,
        topic: str,
        app_id: str,
        factory: ProducerFactory,
        step_timeout_s: float,
    ) -> None:
        self.topic = topic
        self.app_id = app_id
        self._factory = factory
        self._timeout_s = step_timeout_s
        self._producers: dict[int, TxnProducer] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._assigned: set[int] = set()
        self._blocked: set[int] = set()

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}-eos-{self.topic}-{partition}"

    def owns(self, partition: int) -> bool:
        return partition in self._assigned and partition not in self._blocked

    def lock(self, partition: int) -> asyncio.Lock:
        """Held for a whole transaction: one at a time per partition, in batch order."""
        return self._locks.setdefault(partition, asyncio.Lock())

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take this assignment: close every producer, and start (fence) a new one for each
        partition held now. New ones even for partitions held before: another worker may have
        held one in between (this one was a zombie), and fenced the old producer."""
        held = set(partitions)
        self._assigned = held
        self._blocked.clear()
        for partition in list(self._producers):
            async with self.lock(partition):
                await self._discard(partition)
        results = await asyncio.gather(
            *(self._start(p) for p in sorted(held)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):  # started again by its first batch
                log.warning("txn_producer_start_failed", topic=self.topic, error=repr(result))
        log.info("txn_producers_assigned", topic=self.topic, partitions=sorted(held))

    async def producer(self, partition: int) -> TxnProducer:
        """The partition's producer (started if it has none); call only while owned."""
        producer = self._producers.get(partition)
        if producer is None:
            producer = await self._start(partition)
        return producer

    async def replace(self, partition: int) -> TxnProducer:
        """A new producer for the same id: its InitProducerId settles the old transaction."""
        await self._discard(partition)
        return await self._start(partition)

    def block(self, partition: int) -> None:
        self._blocked.add(partition)
        producer = self._producers.pop(partition, None)
        if producer is not None:
            asyncio.ensure_future(stop_producer(producer, self._timeout_s))

    async def close(self) -> None:
        """Stop every producer (an open transaction is aborted by the broker, or fenced)."""
        self._assigned = set()
        for partition in list(self._producers):
            await self._discard(partition)

    async def _start(self, partition: int) -> TxnProducer:
        producer = self._factory(self.transactional_id(partition))
        try:
            await asyncio.wait_for(producer.start(), self._timeout_s)
        except BaseException:
            await stop_producer(producer, self._timeout_s)
            raise
        self._producers[partition] = producer
        return producer

    async def _discard(self, partition: int) -> None:
        producer = self._producers.pop(partition, None)
        if producer is not None:
            await stop_producer(producer, self._timeout_s)


def request_rejoin(app: faust.App) -> None:
    """Ask Faust's consumer to rejoin the group (on its own thread's loop): the next
    assignment re-creates the producers and seeks to the committed offsets."""
    thread = app.consumer._thread  # noqa: SLF001 - no public way to trigger a rebalance
    coordinator = thread._ensure_consumer()._coordinator  # noqa: SLF001
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)


def before_seek(registries: Iterable[TxnProducers]) -> Callable[..., Any]:
    """The `faust_fixes.BEFORE_SEEK` hook handing each new assignment to the registries."""
    by_topic = {registry.topic: registry for registry in registries}

    async def hook(app: faust.App, assignment: set[TP]) -> None:
        await asyncio.gather(
            *(
                registry.assign(tp.partition for tp in assignment if tp.topic == topic)
                for topic, registry in by_topic.items()
            )
        )

    return hook
