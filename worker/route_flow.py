"""One route's consume -> classify -> publish -> acknowledge loop, without Faust's app.

Consumed events go to a `Dispatcher`, which keeps up to `BATCHES_IN_FLIGHT` batches at Triton
and publishes them in the order they were consumed. An event is acknowledged only after its
record is on Kafka. A batch that fails transiently is retried whole; any other failure is
isolated to its message by `worker.failures.isolate` (a `processing_error` dead letter), so no
message can stall the route.

Exactly-once (a `TxnPublisher`): each batch holds one input partition's events, and its records
go out in one transaction with the partition's next offset (`worker/transactions.py`); the
events are acknowledged after it, which for such a topic only ends Faust's in-flight tracking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Callable, Sequence

import structlog
from faust.types import EventT

from worker import intake, metrics
from worker.batching import Dispatcher
from worker.failures import isolate
from worker.messages import OutRecord, RawMessage
from worker.pipeline import BatchResult, Pipeline
from worker.publishing import SendAll, publish
from worker.settings import WorkerSettings
from worker.transactions import TxnPublisher

log = structlog.get_logger(__name__)

Extras = Callable[[BatchResult], list[OutRecord]]
"""What else a classified batch publishes besides its records (the drift samples)."""
Outcome = tuple[BatchResult, list[OutRecord]]


def input_partition(event: EventT) -> int:
    """A batch's key in exactly-once mode: one transaction commits one partition's offset."""
    return event.message.partition


class RouteFlow:
    """Batches of one route's events through `Pipeline`, published, then acknowledged."""

    def __init__(
        self,
        pipeline: Pipeline,
        send_all: SendAll,
        settings: WorkerSettings,
        extras: Extras | None = None,
        txn: TxnPublisher | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.send_all = send_all
        self.settings = settings
        self.extras = extras
        self.txn = txn
        self.retry = {
            "retry_initial_s": settings.triton_retry_initial_s,
            "retry_max_s": settings.triton_retry_max_s,
        }

    async def run(self, batches: AsyncIterable[list[EventT]]) -> None:
        """Process every batch of events; on stop, let the batches in flight finish (within
        `DRAIN_TIMEOUT_S`), so the commit on stop covers them."""
        registry = self.pipeline.registry
        if registry is not None:
            await registry.ready()  # know the serving versions before the first batch
        dispatcher = Dispatcher(
            max_batch=self.settings.max_batch,
            in_flight=self.settings.batches_in_flight,
            process=self.process,
            finish=self.finish,
            key=None if self.txn is None else input_partition,
        )
        async with dispatcher:
            try:
                async for events in batches:
                    await dispatcher.add(events)
            finally:
                # whatever is not done in time is consumed again
                with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
                    await asyncio.wait_for(
                        asyncio.shield(dispatcher.drain()), self.settings.drain_timeout_s
                    )

    async def process(self, events: list[EventT]) -> list[Outcome]:
        raws = [RawMessage.of(e.message) for e in events]
        return await isolate(
            raws, self._attempt, self._fail_one, what=self.pipeline.route.source, **self.retry
        )

    async def finish(self, events: list[EventT], outcomes: list[Outcome]) -> None:
        """Publish a processed batch, acknowledge its events, count and log it."""
        records = [
            r for result, extra in outcomes for r in (*result.records, *result.reviews, *extra)
        ]
        if self.txn is None:
            await publish(records, self.send_all, refused=self.pipeline.refused, **self.retry)
        else:
            first, last = events[0].message, events[-1].message
            outcome = await self.txn.commit_batch(
                first.partition, (first.offset, last.offset + 1), records, self.pipeline.refused
            )
            metrics.TRANSACTIONS.labels(self.pipeline.route.source, outcome).inc()
            if outcome != "committed":
                intake.ack(events)
                log.warning(
                    "batch_not_committed",
                    route=first.topic,
                    partition=first.partition,
                    offsets=[first.offset, last.offset],
                    outcome=outcome,
                )
                return
        intake.ack(events)
        route = self.pipeline.route
        for result, _ in outcomes:
            metrics.observe_batch(
                route.source,
                route.model,
                len(result.records),
                result,
                self.settings.deadletter_topic,
            )
        results = [result for result, _ in outcomes]
        log.info(
            "batch",
            route=route.source,
            model=route.model,
            size=len(events),
            labelled=sum(result.labelled for result in results),
            dead_letters=sum(result.rejected for result in results),
            versions=sorted({v for result in results for v in result.versions}),
            inference_ms=round(sum(result.inference_ms for result in results), 2),
        )

    async def _attempt(self, raws: Sequence[RawMessage]) -> Outcome:
        result = await self.pipeline.process(raws)
        return result, self.extras(result) if self.extras else []

    def _fail_one(self, raw: RawMessage, exc: BaseException) -> Outcome:
        return self.pipeline.failed(raw, exc), []
