"""Fixes for faust-streaming 0.15.3 traps that lose messages, applied once by `create_app`.

Seek before resume. After a rebalance of an app with tables, Faust's recovery resumes the
stream partitions and *then* seeks them back to their committed offsets. Records fetched in
between reach the streams, and the seek resets the consumer's read offsets under them: the
records fetched right after the committed offset, up to the fetch in flight, were never
delivered (measured here: offsets 13-25 of three partitions skipped after a worker was killed
and another took over; `test_restart.py`, since folded into `tests/integration/test_faults.py`,
caught it in two of three runs). The two recovery methods below are Faust's own with one
change: the seek happens while the stream partitions are still paused, so the first record
fetched after resuming is the committed one.

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

No Tasks per record. `Consumer._drain_messages` hands each fetched record to the streams with
`wait_first(callback(message), suspend_flow.wait())`, which makes four Tasks and an
`asyncio.wait` per record (the reported 300-500 msg/s of Faust consume->produce,
robinhood/faust#563; the same call is named in faust-streaming/faust#229). The replacement runs
the callback at once; only when it has to wait (a full stream buffer, flow control) is the rest
raced against `suspend_flow` exactly as before.

Exactly-once sources (`configure_exactly_once`, PROCESSING_GUARANTEE=exactly_once). The
classify agents commit such a topic's offsets inside their own transactions
(worker/transactions.py), so three changes apply to those topics only: Faust's consumer reads
read_committed (it does only when Faust's own exactly-once is on); Faust's offset commit skips
them (a timer commit of an older acknowledged offset, reaching the coordinator after a
transaction's, would move the offset back and replay a committed batch); and the `BEFORE_SEEK`
hooks run on every assignment before the seek to the committed offsets (to fence the
partitions' previous owners first).

Upstream issues each patch works around (faust-streaming 0.15.3 has none of them fixed):
- seek before resume: https://github.com/faust-streaming/faust/issues/216 (resume before the
  seek to committed offsets leaves a gap; PR #217 reordered the flow resume only) and
  https://github.com/faust-streaming/faust/issues/221 (records prefetched before a rebalance);
- getmany rewind: https://github.com/robinhood/faust/issues/580 (records fetched while a
  rebalance stops the flow are dropped; fix proposed in robinhood/faust#583, never merged);
- `_new_offset`: https://github.com/faust-streaming/faust/issues/606 (commit past an
  in-flight message; fix proposed in PR #707) and https://github.com/robinhood/faust/issues/682;
- no Tasks per record: https://github.com/robinhood/faust/issues/563 and
  https://github.com/faust-streaming/faust/issues/229.
Each patch has a unit test that fails on Faust's own method (tests/unit/test_faust_fixes.py),
and the rebalance case in `make test` is tests/integration/test_rebalance.py. Every patch
copies a method of faust-streaming 0.15.3, so `apply` refuses any other version
(`check_version`) rather than patching code it was not written for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, cast

import faust
import structlog
from aiokafka.errors import IllegalStateError
from faust.tables.recovery import Recovery
from faust.transport.consumer import CONSUMER_FETCHING, Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, Message

log = structlog.get_logger(__name__)

_APPLIED = False

SeekHook = Callable[[faust.App, set[TP]], Awaitable[None]]
BEFORE_SEEK: list[SeekHook] = []
"""Awaited with each new assignment, before its partitions seek to their committed offsets."""
EXACTLY_ONCE_TOPICS: set[str] = set()
"""Source topics whose offsets commit in the classify agents' transactions, not by Faust."""


def configure_exactly_once(topics: set[str], hooks: list[SeekHook]) -> None:
    """Make `topics` exactly-once sources (empty: at-least-once, Faust's behaviour)."""
    EXACTLY_ONCE_TOPICS.clear()
    EXACTLY_ONCE_TOPICS.update(topics)
    BEFORE_SEEK[:] = hooks


async def _before_seek(app: faust.App, assignment: set[TP]) -> None:
    for hook in BEFORE_SEEK:
        await hook(app, assignment)


async def _seek_committed(recovery: Recovery, assignment: set[TP]) -> None:
    """The `BEFORE_SEEK` hooks, then the seek to the committed offsets (streams still paused)."""
    recovery.log.info("Seek stream partitions to committed offsets (before resuming them).")
    timeout = recovery.app.conf.broker_request_timeout
    await recovery._wait(_before_seek(recovery.app, assignment), timeout=timeout)  # noqa: SLF001
    await recovery._wait(recovery.app.consumer.perform_seek(), timeout=timeout)  # noqa: SLF001


async def _resume_streams(self: Recovery, generation_id: int = 0) -> None:
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        await _seek_committed(self, assignment)
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
        await _seek_committed(self, assignment)
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
        try:
            await self.seek(tp, offset)
        except IllegalStateError:
            if tp in self.assignment():
                raise  # a rewind that fails for an assigned partition must be loud
            # revoked meanwhile: its new owner resumes from the committed offset
            log.info("faust_fix_rewind_revoked", topic=tp.topic, partition=tp.partition)
            continue
        log.debug("faust_fix_rewound", topic=tp.topic, partition=tp.partition, offset=offset)


# Faust's own methods, for the tests that show each trap (and for `new_offset`).
_faust_new_offset = Consumer._new_offset  # noqa: SLF001
_faust_drain_messages = Consumer._drain_messages  # noqa: SLF001
_faust_getmany = Consumer.getmany
_faust_resume_streams = Recovery._resume_streams  # noqa: SLF001
_faust_on_recovery_completed = Recovery.on_recovery_completed


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


_faust_commit = ThreadDelegateConsumer._commit  # noqa: SLF001
_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer  # noqa: SLF001


async def commit(self: ThreadDelegateConsumer, offsets: Any) -> bool:
    """Faust's broker commit, without the exactly-once topics (their transactions commit
    them); True when nothing else is left, so Faust's bookkeeping moves on as committed."""
    rest = {tp: offset for tp, offset in offsets.items() if tp.topic not in EXACTLY_ONCE_TOPICS}
    if not rest:
        return True
    return await _faust_commit(self, rest)


def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    """Faust's worker consumer, reading read_committed when any source is exactly-once: a
    transaction aborted by a crash must not be read back (drift samples) or processed."""
    consumer = _faust_create_worker_consumer(self, transport)
    if EXACTLY_ONCE_TOPICS:
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - read by start()
    return consumer


PINNED_FAUST = "0.15.3"
"""The faust-streaming release these patches were written against (pyproject.toml pins it)."""


class FaustVersionError(RuntimeError):
    """The installed Faust is not the one the patches copy methods of."""


def _resume(coroutine: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """The rest of a coroutine that already ran to its first suspension (`yielded`), driven as
    `await` would drive it, so a Task can finish it."""
    value = yielded
    while True:
        try:
            sent = yield value
        except BaseException as exc:  # noqa: BLE001 - thrown in (cancellation): passed on
            try:
                value = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value


class _Rest:
    def __init__(self, coroutine: Any, yielded: Any) -> None:
        self._steps = _resume(coroutine, yielded)

    def __await__(self) -> Generator[Any, Any, Any]:
        return self._steps


async def deliver(
    callback: Callable[[Message], Awaitable[None]],
    message: Message,
    wait_first: Callable[..., Awaitable[Any]],
    suspended: Callable[[], Awaitable[Any]],
) -> None:
    """`callback(message)`, run at once; only if it has to wait (a full stream buffer, flow
    control) is the rest raced against `suspended` in `wait_first`, as Faust always does."""
    coroutine = cast(Any, callback(message))
    try:
        yielded = coroutine.send(None)
    except StopIteration:
        return
    await wait_first(_Rest(coroutine, yielded), suspended())


async def drain_messages(self: Consumer, fetcher: Any) -> None:
    """Faust's `Consumer._drain_messages` with one change: a record is handed to the streams
    directly (`deliver`) instead of through `wait_first`, which made four Tasks per record."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set  # noqa: SLF001 - as in Faust
    get_read_offset = self._read_offset.__getitem__  # noqa: SLF001
    set_read_offset = self._read_offset.__setitem__  # noqa: SLF001
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every  # noqa: SLF001
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every = 100
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)  # noqa: SLF001
                        if commit_every is not None and self._n_acked >= commit_every:  # noqa: SLF001
                            self._n_acked = 0  # noqa: SLF001
                            await self.commit()
                        await deliver(callback, message, self.wait_first, self.suspend_flow.wait)
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def check_version(version: str) -> None:
    if version != PINNED_FAUST:
        raise FaustVersionError(
            f"worker/faust_fixes.py patches faust-streaming {PINNED_FAUST}, but {version} is "
            f"installed: install faust-streaming=={PINNED_FAUST}, or port the patches first"
        )


def apply() -> None:
    """Install the fixes (idempotent); refuses any Faust but the pinned one."""
    global _APPLIED
    if _APPLIED:
        return
    check_version(faust.__version__)
    Recovery._resume_streams = _resume_streams  # noqa: SLF001
    Recovery.on_recovery_completed = on_recovery_completed
    Consumer.getmany = getmany
    Consumer._new_offset = new_offset  # noqa: SLF001
    Consumer._drain_messages = drain_messages  # noqa: SLF001
    ThreadDelegateConsumer._commit = commit  # noqa: SLF001
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # noqa: SLF001
    _APPLIED = True
