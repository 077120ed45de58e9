"""A worker stopped mid-stream and started again loses nothing (duplicates allowed)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import orjson
import pytest

from tests.integration.data import texts
from worker.client import produce, read_topics

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stop_mid_stream_and_restart_loses_nothing(routes_settings, start_worker, sig):
    settings = routes_settings
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    messages = [
        (f"r-{i}".encode(), orjson.dumps({"id": f"r-{i}", "text": t}))
        for i, t in enumerate(texts("news", 1500))
    ]
    first = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, messages)
        partial = await read_topics(bootstrap, [news.sink], expect=200, timeout_s=120)
        assert 200 <= len(partial) < len(messages), "stop must land mid-stream"
        first.send_signal(sig)
        await asyncio.to_thread(first.wait, 60)
        start_worker(settings)
        # Duplicates are allowed, so wait for every id rather than for a record count.
        wanted = {k.decode() for k, _ in messages}
        for _ in range(150):
            records = await read_topics(bootstrap, [news.sink])
            if wanted <= {orjson.loads(r.value)["id"] for r in records}:
                break
            await asyncio.sleep(2)
        return records

    records = asyncio.run(scenario())
    counts = Counter(orjson.loads(r.value)["id"] for r in records)
    missing = {k.decode() for k, _ in messages} - set(counts)
    assert not missing, f"{len(missing)} messages lost"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= 2 * settings.max_batch * settings.topic_partitions
