"""Faust's commit bookkeeping and record delivery, with and without the fixes in
`worker.faust_fixes`, and the version tripwire."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP
from intervaltree import IntervalTree
from mode import Service

from worker import faust_fixes

TP0 = TP("news.raw", 0)


def bookkeeping(committed: int | None, acked: list[int], gaps: list[tuple[int, int]] = ()):
    """The consumer attributes `_new_offset` reads, as Faust keeps them."""
    gap = defaultdict(IntervalTree)
    for begin, end in gaps:
        gap[TP0].addi(begin, end)
    return SimpleNamespace(
        _acked=defaultdict(list, {TP0: sorted(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _gap=gap,
    )


def test_faust_alone_commits_over_the_one_offset_still_in_flight():
    # Offset 10 is committed (next to process) and still in flight; 11 and 12 are acked.
    assert faust_fixes._faust_new_offset(bookkeeping(10, [11, 12]), TP0) == 13


def test_the_fix_holds_the_commit_until_the_committed_offset_is_acked():
    assert faust_fixes.new_offset(bookkeeping(10, [11, 12]), TP0) is None
    assert faust_fixes.new_offset(bookkeeping(10, [10, 11, 12]), TP0) == 13
    assert faust_fixes.new_offset(bookkeeping(10, [10, 11, 13]), TP0) == 12


def test_offsets_kafka_never_delivers_count_as_acked():
    # 10-11 are a gap (e.g. transaction markers): 12-13 acked commit through to 14.
    assert faust_fixes.new_offset(bookkeeping(10, [12, 13], gaps=[(10, 12)]), TP0) == 14


def test_without_a_committed_offset_faust_decides():
    assert faust_fixes.new_offset(bookkeeping(None, [0, 1, 2]), TP0) == 3


def test_apply_installs_every_fix_on_faust():
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer

    faust_fixes.apply()
    assert Consumer._new_offset is faust_fixes.new_offset
    assert Consumer.getmany is faust_fixes.getmany
    assert Consumer._drain_messages is faust_fixes.drain_messages
    assert Recovery._resume_streams is faust_fixes._resume_streams
    assert Recovery.on_recovery_completed is faust_fixes.on_recovery_completed
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert ThreadDelegateConsumer._commit is faust_fixes.commit
    assert AIOKafkaConsumerThread._create_worker_consumer is faust_fixes.create_worker_consumer


class Draining:
    """The consumer attributes `_drain_messages` reads: one fetch of `offsets`, then stop."""

    wait_first = Service.wait_first

    def __init__(self, offsets: list[int], callback) -> None:
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.suspend_flow = asyncio.Event()
        self.callback = callback
        self.offsets = offsets
        self._read_offset = defaultdict(lambda: None)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))
        self.log = SimpleNamespace(info=print, exception=print)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def getmany(self, timeout: float):
        for offset in self.offsets:
            yield TP0, SimpleNamespace(offset=offset, topic=TP0.topic)
        self._stopped.set()


async def drain_counting_tasks(drain, offsets: list[int], callback) -> tuple[int, Draining]:
    """Run one drain pass; how many Tasks it created."""
    loop = asyncio.get_running_loop()
    created = 0

    def factory(loop, coro, **kwargs):
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    consumer = Draining(offsets, callback)
    loop.set_task_factory(factory)
    try:
        await drain(consumer, SimpleNamespace(_stopped=asyncio.Event()))
    finally:
        loop.set_task_factory(None)
    return created, consumer


async def test_faust_alone_makes_four_tasks_per_record():
    delivered = []

    async def callback(message):
        delivered.append(message.offset)

    tasks, _ = await drain_counting_tasks(faust_fixes._faust_drain_messages, [0, 1, 2], callback)
    assert delivered == [0, 1, 2] and tasks >= 4 * 3


async def test_the_fix_delivers_records_without_a_task_each():
    delivered = []

    async def callback(message):
        delivered.append(message.offset)

    tasks, _ = await drain_counting_tasks(faust_fixes.drain_messages, list(range(50)), callback)
    assert delivered == list(range(50)) and tasks == 0


async def test_a_blocked_delivery_is_abandoned_when_flow_is_suspended_as_in_faust():
    """A full stream buffer blocks the callback; a rebalance (suspend_flow) must free the
    drain loop, and the blocked delivery is cancelled, exactly as Faust's wait_first does."""
    delivered, cancelled = [], []
    consumer_box: list[Draining] = []

    async def callback(message):
        if message.offset == 1:
            loop = asyncio.get_running_loop()
            loop.call_later(0.01, consumer_box[0].suspend_flow.set)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(message.offset)
                raise
        delivered.append(message.offset)

    consumer = Draining([0, 1, 2], callback)
    consumer_box.append(consumer)
    await asyncio.wait_for(
        faust_fixes.drain_messages(consumer, SimpleNamespace(_stopped=asyncio.Event())), 5
    )
    assert delivered == [0, 2] and cancelled == [1]


def test_patches_refuse_any_faust_but_the_pinned_one(monkeypatch):
    import faust

    faust_fixes.check_version(faust_fixes.PINNED_FAUST)
    with pytest.raises(faust_fixes.FaustVersionError, match=r"0\.15\.3, but 0\.16\.0"):
        faust_fixes.check_version("0.16.0")
    monkeypatch.setattr(faust_fixes, "_APPLIED", False)
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_fixes.FaustVersionError):
        faust_fixes.apply()


class Fetching:
    """The consumer attributes `getmany` reads: one fetch of TP0 records while TP0 is paused."""

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.app = SimpleNamespace(consumer_generation_id=1)
        self.should_stop = False
        self.flow_active = True
        self._buffered_partitions: set[TP] = set()
        self.scheduler = SimpleNamespace(
            iterate=lambda records: ((tp, r) for tp, rs in records.items() for r in rs)
        )

    async def _wait_next_records(self, timeout: float):
        return {TP0: [SimpleNamespace(offset=5), SimpleNamespace(offset=6)]}, set()

    async def seek(self, tp: TP, offset: int) -> None:
        raise IllegalStateError(f"{tp} is not assigned")

    def assignment(self) -> set[TP]:
        return self.assigned


async def test_a_failed_rewind_of_an_assigned_partition_is_loud():
    with pytest.raises(IllegalStateError):
        async for _ in faust_fixes.getmany(Fetching({TP0}), 1.0):
            pass


async def test_a_rewind_of_a_partition_revoked_meanwhile_is_left_to_its_new_owner():
    delivered = [item async for item in faust_fixes.getmany(Fetching(set()), 1.0)]
    assert delivered == []


class Rewinding(Fetching):
    """A fetch of TP0 (offsets 5 and 6) while TP0 is paused; seeks are recorded."""

    def __init__(self) -> None:
        super().__init__({TP0})
        self.seeks: list[tuple[TP, int]] = []
        self._to_message = lambda tp, record: record

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_faust_alone_drops_the_records_of_a_paused_partition_without_a_rewind():
    consumer = Rewinding()
    delivered = [item async for item in faust_fixes._faust_getmany(consumer, 1.0)]
    assert delivered == [] and consumer.seeks == []  # the position moved past 5 and 6


async def test_the_fix_rewinds_a_paused_partition_to_its_first_undelivered_record():
    consumer = Rewinding()
    delivered = [item async for item in faust_fixes.getmany(consumer, 1.0)]
    assert delivered == [] and consumer.seeks == [(TP0, 5)]


class Recovering:
    """The recovery attributes Faust's resume paths read; records what the consumer is told."""

    def __init__(self) -> None:
        self.calls: list[str] = []

        async def nothing(*args, **kwargs) -> None:
            return None

        async def seek() -> None:
            self.calls.append("seek")

        consumer = SimpleNamespace(
            assignment=lambda: {TP0},
            perform_seek=seek,
            resume_partitions=lambda tps: self.calls.append("resume_partitions"),
            resume_flow=lambda: self.calls.append("resume_flow"),
        )
        self.app = SimpleNamespace(
            consumer=consumer,
            consumer_generation_id=0,
            on_rebalance_complete=SimpleNamespace(send=nothing),
            conf=SimpleNamespace(broker_request_timeout=1.0),
            flow_control=SimpleNamespace(resume=lambda: None),
            _fetcher=SimpleNamespace(maybe_start=nothing),
            on_rebalance_end=lambda: None,
            assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        )
        self.log = SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=print)
        self.completed = asyncio.Event()
        self.tables = SimpleNamespace(
            values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None
        )
        self.actives_for_table: dict = {}
        self.standbys_for_table: dict = {}

    def _is_changelog_tp(self, tp: TP) -> bool:
        return False

    def _set_recovery_ended(self) -> None:
        return None

    async def _wait(self, coroutine, timeout: float) -> None:
        await coroutine


@pytest.mark.parametrize(
    ("faust_method", "fixed"),
    [
        (faust_fixes._faust_resume_streams, faust_fixes._resume_streams),
        (faust_fixes._faust_on_recovery_completed, faust_fixes.on_recovery_completed),
    ],
    ids=["resume_streams", "on_recovery_completed"],
)
async def test_recovery_seeks_before_it_resumes_the_stream_partitions(faust_method, fixed):
    upstream, patched = Recovering(), Recovering()
    await faust_method(upstream)
    await fixed(patched)
    # Faust resumes first: records fetched before the seek reach the streams, then are skipped.
    assert upstream.calls.index("resume_partitions") < upstream.calls.index("seek")
    assert patched.calls.index("seek") < patched.calls.index("resume_partitions")
    assert patched.completed.is_set()


@pytest.fixture
def exactly_once_source():
    """`news.raw` is an exactly-once source for one test; at-least-once again afterwards."""
    calls: list[str] = []

    async def hook(app, assignment) -> None:
        calls.append("before_seek")

    faust_fixes.configure_exactly_once({TP0.topic}, [hook])
    yield calls
    faust_fixes.configure_exactly_once(set(), [])


class Committing:
    """A `ThreadDelegateConsumer` as `_commit` sees it: its thread's commit records offsets."""

    def __init__(self) -> None:
        self.committed: list[dict] = []

        async def commit(offsets) -> bool:
            self.committed.append(dict(offsets))
            return True

        self._thread = SimpleNamespace(commit=commit)


async def test_faust_would_commit_an_exactly_once_topic_over_its_transactions(
    exactly_once_source,
):
    consumer = Committing()
    await faust_fixes._faust_commit(consumer, {TP0: 7})
    assert consumer.committed == [{TP0: 7}]


async def test_faust_commits_only_the_at_least_once_topics(exactly_once_source):
    consumer, other = Committing(), TP("labelstream-drift-samples", 0)
    assert await faust_fixes.commit(consumer, {TP0: 7}) is True
    assert consumer.committed == [], "the transaction commits news.raw's offsets"
    assert await faust_fixes.commit(consumer, {TP0: 8, other: 3}) is True
    assert consumer.committed == [{other: 3}]


async def test_at_least_once_commits_everything():
    consumer = Committing()
    await faust_fixes.commit(consumer, {TP0: 7})
    assert consumer.committed == [{TP0: 7}]


def test_an_exactly_once_source_makes_faust_read_committed(monkeypatch, exactly_once_source):
    made = SimpleNamespace(_isolation_level="read_uncommitted")
    monkeypatch.setattr(faust_fixes, "_faust_create_worker_consumer", lambda self, t: made)
    assert faust_fixes.create_worker_consumer(None, None)._isolation_level == "read_committed"
    faust_fixes.configure_exactly_once(set(), [])
    made._isolation_level = "read_uncommitted"
    assert faust_fixes.create_worker_consumer(None, None)._isolation_level == "read_uncommitted"


@pytest.mark.parametrize(
    "fixed",
    [faust_fixes._resume_streams, faust_fixes.on_recovery_completed],
    ids=["resume_streams", "on_recovery_completed"],
)
async def test_the_before_seek_hooks_run_before_the_seek(fixed, exactly_once_source):
    recovering = Recovering()
    recovering.calls = exactly_once_source  # the hook and the consumer log to one list
    await fixed(recovering)
    calls = recovering.calls
    assert calls.count("before_seek") == 1
    assert calls.index("before_seek") < calls.index("seek") < calls.index("resume_partitions")
