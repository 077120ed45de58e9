"""Fixes for faust-streaming 0.15.3 traps that lose messages, applied once by `create_app`.

Seek before resume. After a rebalance of an app with tables, Faust's recovery resumes the
stream partitions and *then* seeks them back to their committed offsets. Records fetched in
between reach the streams, and the seek resets the consumer's read offsets under them: the
records fetched right after the committed offset, up to the fetch in flight, were never
delivered (measured here: offsets 13-25 of three partitions skipped after a worker was killed
and another took over; `tests/integration/test_restart.py` caught it in two of three runs).
The two recovery methods below are Faust's own with one change: the seek happens while the
stream partitions are still paused, so the first record fetched after resuming is the committed
one.

Never drop a fetched record. `Consumer.getmany` skips records of partitions that are paused
(or whose flow stopped, or whose generation changed) by the time the fetch returns, but the
consumer's position has already moved past them; with no committed offset yet, nothing ever
rewinds it (measured: a whole backlog of 1,500 messages fetched during table recovery and never
delivered). The replacement seeks each such partition back to its first undelivered record.

Never commit over an unacknowledged offset. `Consumer._new_offset` holds a commit back only when
the lowest acknowledged offset is more than one past the committed one, so with offset 10
committed (next to process), 10 still in flight and 11-12 acknowledged, it commits 13 and 10 is
never processed if the worker stops then. The wrapper below holds the commit back whenever the
lowest acknowledged offset (or a gap Kafka will never deliver) is past the committed one.
The classify agents acknowledge in consumption order, so this holds back nothing in normal
running; it turns a silent loss into replay if anything ever acknowledges out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.types import TP, Message

log = structlog.get_logger(__name__)

_APPLIED = False


async def _resume_streams(self: Recovery, generation_id: int = 0) -> None:
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets (before resuming them).")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()  # noqa: SLF001 - as in Faust
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
            f"param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets (before resuming them).")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()  # noqa: SLF001 - as in Faust
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def getmany(self: Consumer, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
    """Faust's `Consumer.getmany`, rewinding what it cannot deliver instead of dropping it."""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    undelivered: dict[TP, int] = {}
    if self.flow_active:
        stopped = False
        for tp, record in self.scheduler.iterate(records):
            if not stopped and (
                not self.flow_active or self.app.consumer_generation_id != generation_id
            ):
                stopped = True
            deliverable = (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            )
            if stopped or not deliverable or tp in undelivered:
                undelivered.setdefault(tp, record.offset)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)
    else:
        await self.perform_seek()
    for tp, offset in undelivered.items():
        # a partition revoked meanwhile resumes from its committed offset on its new owner
        with contextlib.suppress(Exception):
            await self.seek(tp, offset)
            log.debug("faust_fix_rewound", topic=tp.topic, partition=tp.partition, offset=offset)


_faust_new_offset = Consumer._new_offset  # noqa: SLF001


def new_offset(self: Consumer, tp: TP) -> int | None:
    """Faust's `_new_offset`, but nothing while the committed offset itself is unacknowledged."""
    acked = self._acked[tp]  # noqa: SLF001
    committed = self._committed_offset[tp]  # noqa: SLF001
    if acked and committed is not None:
        first = min(acked)
        gaps = self._gap[tp]  # noqa: SLF001
        if gaps:
            first = min(first, min(interval.begin for interval in gaps))
        if first > committed:
            return None
    return _faust_new_offset(self, tp)


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    Recovery._resume_streams = _resume_streams  # noqa: SLF001
    Recovery.on_recovery_completed = on_recovery_completed
    Consumer.getmany = getmany
    Consumer._new_offset = new_offset  # noqa: SLF001
    _APPLIED = True
