"""Message in: the events Faust delivered to an agent's stream, taken in bulk.

Faust's stream iteration (`noack_take` over `Stream.__aiter__`) costs an event-loop cycle, a
processor call and the sensors for every event. The agent only needs the events in their
order, so `take` empties the stream's channel queue at once, up to a batch, and does per event
only what Faust's own iteration must: skip events of an older consumer generation (their
partitions were rebalanced: they are fetched again from the committed offset, so they are
neither processed nor acknowledged here) and track each event as in flight, so a rebalance
waits for it (`Consumer.track_message`, as `Stream.__aiter__` does inline).

Acknowledgement is `ack`, once per finished batch, in consumption order: no offset is committed
before the batch's records are on Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust
from faust.types import EventT


async def take(stream: faust.StreamT, max_batch: int) -> AsyncIterator[list[EventT]]:
    """Lists of up to `max_batch` events, as soon as any arrived (waits for the first only).

    Ends when Faust stops the agent's actor (it throws `StopAsyncIteration` into the queue);
    events still queued then were never tracked nor acknowledged, and are fetched again.
    """
    app = stream.app
    queue = stream.channel.queue
    stopped = False
    while not (stopped or stream.should_stop):
        events, stopped = await _next(queue, max_batch)
        fresh = _fresh(app, events)
        if fresh:
            yield fresh


async def _next(queue: Any, max_batch: int) -> tuple[list[EventT], bool]:
    """What the queue holds now, up to `max_batch` (waiting for one), and whether to stop."""
    events: list[EventT] = []
    try:
        events.append(await queue.get())
        while len(events) < max_batch and not queue.empty():
            events.append(queue.get_nowait())
    except StopAsyncIteration:
        return events, True
    return events, False


def _fresh(app: faust.App, events: list[EventT]) -> list[EventT]:
    """The events of the current consumer generation, each tracked as in flight."""
    consumer = app.consumer
    acking = app.topics.acking_topics
    generation = app.consumer_generation_id
    if not app.flow_control.is_active():
        return []
    fresh = []
    for event in events:
        message = event.message
        if message.generation_id != generation:
            continue
        if message.topic in acking and not message.tracked:
            message.tracked = True
            consumer.track_message(message)
        fresh.append(event)
    return fresh


def ack(events: Sequence[EventT]) -> None:
    """Acknowledge finished events, in the order given (Faust commits the acked prefix)."""
    for event in events:
        event.ack()
