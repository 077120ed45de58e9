"""`intake.take`: the events Faust queued for an agent, in bulk and in order; stale generations
skipped, fresh events tracked once; a stop thrown in by Faust ends it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mode.utils.queues import FlowControlEvent, ThrowableQueue

from worker import intake


def fake_stream(generation: int = 2):
    tracked: list[int] = []
    app = SimpleNamespace(
        consumer=SimpleNamespace(track_message=lambda m: tracked.append(m.offset)),
        topics=SimpleNamespace(acking_topics={"news.raw"}),
        consumer_generation_id=generation,
        flow_control=SimpleNamespace(is_active=lambda: True),
    )
    queue = ThrowableQueue(maxsize=1000, flow_control=FlowControlEvent())
    stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue), should_stop=False)
    return stream, queue, tracked


def event(offset: int, generation: int = 2):
    return SimpleNamespace(
        message=SimpleNamespace(
            offset=offset, generation_id=generation, topic="news.raw", tracked=False
        )
    )


def offsets(events) -> list[int]:
    return [e.message.offset for e in events]


async def test_takes_what_is_queued_up_to_max_batch_in_order():
    stream, queue, tracked = fake_stream()
    for offset in range(10):
        queue.put_nowait(event(offset))
    batches = intake.take(stream, max_batch=4)
    got = [offsets(await anext(batches)) for _ in range(3)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert tracked == list(range(10))


async def test_waits_for_the_first_event_only():
    stream, queue, _ = fake_stream()
    batches = intake.take(stream, max_batch=64)
    pending = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    assert not pending.done()
    queue.put_nowait(event(7))
    assert offsets(await asyncio.wait_for(pending, 1)) == [7]


async def test_events_of_an_older_generation_are_skipped_and_never_tracked():
    stream, queue, tracked = fake_stream(generation=3)
    for offset, generation in ((0, 2), (1, 3), (2, 2), (3, 3)):
        queue.put_nowait(event(offset, generation))
    assert offsets(await anext(intake.take(stream, max_batch=64))) == [1, 3]
    assert tracked == [1, 3]


async def test_a_stop_thrown_by_faust_ends_the_batches_and_leaves_queued_events_untracked():
    """The queue raises a thrown error before its items (as Faust's own iteration sees it):
    queued events are neither taken nor tracked, so nothing waits for them, and they are
    fetched again from the committed offset."""
    stream, queue, tracked = fake_stream()
    queue.put_nowait(event(0))
    queue._throw(StopAsyncIteration())  # what Faust's Actor.cancel does
    assert [offsets(b) async for b in intake.take(stream, max_batch=64)] == []
    assert tracked == []


async def test_a_stop_while_waiting_ends_the_batches():
    stream, queue, _ = fake_stream()
    batches = asyncio.ensure_future(_collect(intake.take(stream, max_batch=64)))
    await asyncio.sleep(0.01)
    queue._throw(StopAsyncIteration())
    assert await asyncio.wait_for(batches, 1) == []


async def _collect(batches) -> list:
    return [b async for b in batches]
