"""Exactly-once publishing: a batch's outputs and its input offset commit in one transaction.

`TxnPublisher.commit_batch` is the exactly-once counterpart of `publishing.publish`. The batch
is from one input partition (the keyed `Dispatcher`), already classified, so Triton time and
its retries stay outside the transaction. One attempt is: begin, send every record (labelled,
dead letters, drift samples) and the partition's next offset to the transaction, commit.

Every failure ends in one of three ways, and none loses or doubles a batch:
- a produce batch failed: the transaction is abandoned and the producer replaced (its new
  InitProducerId aborts it); records the broker refuses for good become dead letters; retried;
- ProducerFenced: another worker owns the partition now. The batch is released unpublished,
  the partition blocked and a rejoin requested; the next assignment seeks back to the
  committed offset;
- anything else, or a step past `TRANSACTION_STEP_TIMEOUT_S`, may or may not have committed:
  the producer is replaced and the committed offset decides (`settle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Literal

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from worker.failures import is_record_refused
from worker.inference import backoff_delays
from worker.messages import OutRecord
from worker.publishing import BatchProducer, Outcomes, Refused
from worker.txn_producers import OffsetReader, TxnProducer, TxnProducers

log = structlog.get_logger(__name__)

TxnOutcome = Literal["committed", "already_committed", "released"]
"""committed: by this call; already_committed: by an earlier attempt whose answer was lost;
released: not published, the partition is no longer this worker's to commit."""
Settled = Literal["retry", "already_committed", "resync"]


def settle(committed: int | None, first: int, end: int) -> Settled:
    """What a failed attempt did, from the partition's committed offset read after the
    producer was replaced (so no transaction of this id is still open).

    `first`/`end`: the batch's first offset and the one after its last. Nobody has committed
    past the batch's start: not committed, retry (below `first` only where the source has
    offsets with no record, such as transaction markers). Exactly `end`: this batch committed.
    Anything else: another owner committed over it; only a rejoin can tell what is left.
    """
    if committed is None or committed <= first:
        return "retry"
    if committed == end:
        return "already_committed"
    return "resync"


class TxnPublisher:
    """Commits one route's batches, each in a transaction of its input partition's producer."""

    def __init__(
        self,
        producers: TxnProducers,
        offsets: OffsetReader,
        *,
        group_id: str,
        max_request_bytes: int,
        step_timeout_s: float,
        rejoin: Callable[[], None],
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.producers = producers
        self.offsets = offsets
        self.group_id = group_id
        self.max_request_bytes = max_request_bytes
        self.step_timeout_s = step_timeout_s
        self.rejoin = rejoin
        self.retry = (retry_initial_s, retry_max_s)

    async def commit_batch(
        self,
        partition: int,
        span: tuple[int, int],
        records: Sequence[OutRecord],
        refused: Refused | None = None,
    ) -> TxnOutcome:
        """Publish `records` and commit offset `span[1]` for `partition`, as one transaction.

        Retries until it commits, learns an earlier attempt did, or the partition stops being
        this worker's (then "released": the caller acknowledges the events without effect).
        """
        first, end = span
        todo = list(records)
        alone: set[int] = set()  # to find which record of a refused produce batch is refused
        delays = backoff_delays(*self.retry)
        unsettled = False  # an attempt failed: it may have committed, the offset must say
        async with self.producers.lock(partition):
            while self.producers.owns(partition):
                if unsettled:
                    settled = await self._settle(partition, first, end)
                    if settled == "already_committed":
                        return settled
                    if settled == "resync":
                        self._resync(partition, "offset_moved")
                        return "released"
                    unsettled = settled is None
                    if unsettled:
                        await asyncio.sleep(next(delays))
                        continue
                try:
                    again = await self._attempt(partition, end, todo, alone, refused)
                except ProducerFenced:
                    self._resync(partition, "producer_fenced")
                    return "released"
                except Exception as exc:  # noqa: BLE001 - ambiguous: the offset decides
                    log.warning("transaction_failed", partition=partition, error=repr(exc))
                    unsettled = True
                    continue
                if again is None:
                    return "committed"
                todo, unsettled = again, True  # abandoned: settling replaces the producer
                await asyncio.sleep(next(delays))
        return "released"

    async def close(self) -> None:
        await self.producers.close()
        await self.offsets.close()

    async def _attempt(
        self,
        partition: int,
        end: int,
        records: list[OutRecord],
        alone: set[int],
        refused: Refused | None,
    ) -> list[OutRecord] | None:
        """One transaction: None once committed, or the records to send in the next one."""
        producer = await self.producers.producer(partition)
        await self._step(producer.begin_transaction())
        offsets = {TopicPartition(self.producers.topic, partition): end}
        sent, offered = await self._step(
            asyncio.gather(
                self._sender(producer).send_all(records, alone),
                producer.send_offsets_to_transaction(offsets, self.group_id),
                return_exceptions=True,
            )
        )
        if isinstance(offered, BaseException):
            raise offered
        if isinstance(sent, BaseException):
            raise sent
        if any(error is not None for error in sent):
            return self._next_try(records, sent, alone, refused)
        await self._step(producer.commit_transaction())
        return None

    def _sender(self, producer: TxnProducer) -> BatchProducer:
        return BatchProducer(lambda: producer, self.max_request_bytes, split_refused=False)

    def _next_try(
        self,
        records: list[OutRecord],
        outcomes: Outcomes,
        alone: set[int],
        refused: Refused | None,
    ) -> list[OutRecord]:
        """Every record again (the transaction is abandoned). A refused produce batch of
        several records has them sent alone next time (the broker names no record, and a
        split inside one transaction would leave a sequence gap); a record refused alone is
        replaced by its dead letter. Updates `alone`."""
        again = []
        for index, (record, error) in enumerate(zip(records, outcomes, strict=True)):
            if isinstance(error, ProducerFenced):
                raise error
            replacement = None
            if error is not None and refused is not None and is_record_refused(error):
                if index in alone:
                    replacement = refused(record, error)
                    log.error("record_refused", topic=record.topic, error=repr(error))
                else:
                    alone.add(index)
            again.append(replacement or record)
        failed = next(error for error in outcomes if error is not None)
        log.warning("transaction_retry", records=len(again), error=repr(failed))
        return again

    async def _settle(self, partition: int, first: int, end: int) -> Settled | None:
        """Replace the producer, then read the committed offset; None if either failed."""
        try:
            await self._replace(partition)
            committed = await self.offsets.committed(self.producers.topic, partition)
        except Exception as exc:  # noqa: BLE001 - broker unreachable: settle again later
            log.warning("transaction_settle_failed", partition=partition, error=repr(exc))
            return None
        settled = settle(committed, first, end)
        log.info("transaction_settled", partition=partition, committed=committed, outcome=settled)
        return settled

    async def _replace(self, partition: int) -> None:
        if self.producers.owns(partition):
            await self.producers.replace(partition)

    def _resync(self, partition: int, reason: str) -> None:
        log.warning(
            "partition_blocked", topic=self.producers.topic, partition=partition, reason=reason
        )
        self.producers.block(partition)
        self.rejoin()

    async def _step(self, step):  # noqa: ANN001, ANN202 - any awaitable, its result
        return await asyncio.wait_for(step, self.step_timeout_s)
