"""End to end through the real broker and real Triton: nothing lost, nothing extra."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import orjson
import pytest

from tests.integration.data import texts
from tests.integration.malformed import MALFORMED
from worker.client import produce, read_topics

pytestmark = pytest.mark.integration

LABELS = {
    "news_topic": {"World", "Sports", "Business", "Sci/Tech"},
    "review_sentiment": {"negative", "positive"},
}


def valid(prefix: str, items: list[str]) -> list[tuple[bytes, bytes]]:
    out = []
    for i, text in enumerate(items):
        msg_id = f"{prefix}-{i}"
        out.append((msg_id.encode(), orjson.dumps({"id": msg_id, "text": text, "meta": {"i": i}})))
    return out


def test_300_messages_280_labelled_20_dead_lettered(routes_settings, start_worker):
    settings = routes_settings
    news_route, reviews_route = settings.routes
    news = valid("news", texts("news", 140))
    reviews = valid("review", texts("reviews", 140))
    bad = [(None, value) for value, _ in MALFORMED]
    assert len(news) + len(reviews) + len(bad) == 300

    start_worker(settings)
    bootstrap = settings.kafka_bootstrap_servers

    async def scenario():
        await produce(bootstrap, news_route.source, news + bad[:10])
        await produce(bootstrap, reviews_route.source, reviews + bad[10:])
        labelled = await read_topics(
            bootstrap, [news_route.sink, reviews_route.sink], expect=280, timeout_s=180, settle_s=3
        )
        dead = await read_topics(
            bootstrap, [settings.deadletter_topic], expect=20, timeout_s=30, settle_s=1
        )
        return labelled, dead

    labelled, dead = asyncio.run(scenario())

    assert len(labelled) == 280
    by_topic = Counter(r.topic for r in labelled)
    assert by_topic == {news_route.sink: 140, reviews_route.sink: 140}
    ids = set()
    for record in labelled:
        body = orjson.loads(record.value)
        route = news_route if record.topic == news_route.sink else reviews_route
        assert record.key == body["id"].encode()
        assert body["model"]["name"] == route.model
        assert body["model"]["version"] == "1"
        assert body["label"] in LABELS[route.model]
        assert set(body["scores"]) == LABELS[route.model]
        assert body["scores"][body["label"]] == pytest.approx(body["confidence"], abs=1e-5)
        assert body["latency_ms"] >= 0
        ids.add(body["id"])
    assert ids == {k.decode() for k, _ in news + reviews}

    assert len(dead) == 20
    expected = Counter(reason for _, reason in MALFORMED)
    got = Counter(orjson.loads(r.value)["error"]["type"] for r in dead)
    assert got == expected
    originals = sorted(value for value, _ in MALFORMED)
    recovered = sorted(base64.b64decode(orjson.loads(r.value)["value_b64"] or "") for r in dead)
    assert recovered == originals
    for record in dead:
        body = orjson.loads(record.value)
        assert body["error"]["detail"]
        assert body["topic"] in (news_route.source, reviews_route.source)
