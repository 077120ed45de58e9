"""Triton stops while messages flow; once it is back, every message is labelled."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.integration.conftest import MODELS
from tests.integration.data import texts
from tests.integration.faults import outcome
from worker.client import produce, read_topics

pytestmark = pytest.mark.integration


def batch(prefix: str, items: list[str]) -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": t}))
        for i, t in enumerate(items)
    ]


def test_messages_survive_a_triton_outage(stack, routes_settings, start_worker):
    settings = routes_settings
    news_route, reviews_route = settings.routes
    bootstrap = settings.kafka_bootstrap_servers
    before = batch("before", texts("news", 100))
    during_news = batch("during", texts("news", 150))
    during_reviews = batch("during-r", texts("reviews", 150))
    sinks = [news_route.sink, reviews_route.sink]

    worker = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news_route.source, before)
        first = await read_topics(bootstrap, sinks, expect=100, timeout_s=120)
        assert len(first) == 100
        await stack.triton.stop()
        try:
            await produce(bootstrap, news_route.source, during_news)
            await produce(bootstrap, reviews_route.source, during_reviews)
            await asyncio.sleep(5)
            stalled = await read_topics(bootstrap, sinks)
            assert len(stalled) == 100, "nothing can be labelled while Triton is down"
            assert worker.poll() is None, "the worker must survive the outage"
        finally:
            # the stack is shared by the whole session: a failed assertion must not leave
            # every later test without Triton
            await stack.triton.start(load_models=MODELS)
        return await read_topics(bootstrap, sinks, expect=400, timeout_s=180, settle_s=3)

    records = asyncio.run(scenario())
    expected = {k.decode() for k, _ in before + during_news + during_reviews}
    dead = asyncio.run(read_topics(bootstrap, [settings.deadletter_topic]))
    result = outcome("Triton stopped and restarted mid-stream", expected, records, dead)
    assert result.lost == 0 and result.dead_lettered == 0
    assert result.duplicates == 0, "no duplicates without a worker crash"
    assert dead == []
