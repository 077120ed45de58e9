"""A second worker joins mid-stream: the group rebalances (with the drift table's recovery)
while messages flow, and every message is labelled, counted by id.

This is the case `worker/faust_fixes.py`'s `getmany` and recovery patches are for (records
fetched while partitions are paused for recovery, the seek to committed offsets); it runs in
`make test`, the longer fault cases in `make chaos`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.faults import (
    collect,
    ids,
    messages,
    outcome,
    stable_group,
    wait_labelled,
)
from worker.client import produce

pytestmark = pytest.mark.integration

TOTAL = 1000
FIRST = 300  # sent before the second worker starts
HELD = 200  # sent only once the second worker is in the group
CHUNK = 20


async def trickle(bootstrap: str, topic: str, batch: list, pause_s: float = 0.25) -> None:
    for start in range(0, len(batch), CHUNK):
        await produce(bootstrap, topic, batch[start : start + CHUNK])
        await asyncio.sleep(pause_s)


def test_a_second_worker_joining_mid_stream_loses_nothing(routes_settings, start_worker):
    settings = routes_settings
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("join", "news", TOTAL)
    started = time.monotonic()
    first = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch[:FIRST])
        await wait_labelled(bootstrap, [news.sink], 100)
        second = start_worker(settings)
        # messages keep coming while the second worker starts, joins and recovers the table
        feeding = asyncio.create_task(trickle(bootstrap, news.source, batch[FIRST:-HELD]))
        await stable_group(bootstrap, settings.app_id, members=2)
        await feeding
        await trickle(bootstrap, news.source, batch[-HELD:])
        found = await collect(bootstrap, [news.sink], settings.deadletter_topic, ids(batch))
        return second, found

    second, (labelled, dead) = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    print(f"rebalance case: {elapsed:.0f} s")
    assert first.poll() is None and second.poll() is None, "both workers still run"
    result = outcome("second worker joins mid-stream", ids(batch), labelled, dead)
    assert result.lost == 0 and result.dead_lettered == 0
    # At-least-once: a rebalance replays at most what was in flight and not yet committed.
    bound = settings.topic_partitions * settings.max_batch * settings.batches_in_flight
    assert result.duplicates <= bound
