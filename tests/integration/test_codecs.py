"""Compressed input from Kafka's own Java console producer, on the real broker and Triton:
none, gzip, snappy, lz4 and zstd, 200 messages each, and a topic that recompresses to zstd.
Without cramjam the first snappy batch killed the worker, and every restart again."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.console_producer import console_produce, ensure_tools
from tests.integration.data import texts
from tests.integration.faults import collect, outcome

pytestmark = pytest.mark.integration

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 200


def test_console_producer_codecs_and_a_zstd_topic_are_all_labelled(routes_settings, start_worker):
    settings = routes_settings
    route = settings.routes[0]
    zstd_topic = f"{route.source}.zstd"
    libs = ensure_tools()
    bootstrap = settings.kafka_bootstrap_servers

    async def zstd_source():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            configs = {"compression.type": "zstd"}
            await admin.create_topics([NewTopic(zstd_topic, 2, 1, topic_configs=configs)])
        finally:
            await admin.close()

    asyncio.run(zstd_source())
    zstd_route = route.model_copy(update={"source": zstd_topic})
    settings = settings.model_copy(update={"routes": [route, zstd_route]})
    corpus = texts("news", PER_CODEC * (len(CODECS) + 1))
    batches = {
        codec: [
            (f"{codec}-{i}".encode(), orjson.dumps({"id": f"{codec}-{i}", "text": text}))
            for i, text in enumerate(corpus[n * PER_CODEC : (n + 1) * PER_CODEC])
        ]
        for n, codec in enumerate([*CODECS, "topic-zstd"])
    }
    worker = start_worker(settings)  # one worker process for the whole case
    for codec in CODECS:
        console_produce(libs, bootstrap, route.source, batches[codec], codec=codec)
        assert worker.poll() is None, f"the worker died after the {codec} messages"
    console_produce(libs, bootstrap, zstd_topic, batches["topic-zstd"], codec="none")
    wanted = {key.decode() for batch in batches.values() for key, _ in batch}

    async def collect_watching():
        """Collect, checking every 0.2 s that the worker process is still alive."""
        exits: list[int] = []

        async def watch():
            while (code := worker.poll()) is None:
                await asyncio.sleep(0.2)
            exits.append(code)

        watcher = asyncio.create_task(watch())
        try:
            return await collect(
                bootstrap, [route.sink], settings.deadletter_topic, wanted, timeout_s=300
            ), exits
        finally:
            watcher.cancel()

    (labelled, dead), exits = asyncio.run(collect_watching())
    assert not exits and worker.poll() is None, f"the worker exited ({exits}): a codec?"
    counted = outcome(
        "Kafka's console producer: none, gzip, snappy, lz4, zstd and a zstd topic",
        wanted,
        labelled,
        dead,
    )
    assert (counted.labelled, counted.dead_lettered, counted.lost) == (len(wanted), 0, 0)
