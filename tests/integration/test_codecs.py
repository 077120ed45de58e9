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
    libs = ensure_tools(settings.kafka_version)
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
    worker = start_worker(settings)
    for codec in CODECS:
        console_produce(libs, bootstrap, route.source, batches[codec], codec=codec)
    console_produce(libs, bootstrap, zstd_topic, batches["topic-zstd"], codec="none")
    wanted = {key.decode() for batch in batches.values() for key, _ in batch}

    labelled, dead = asyncio.run(
        collect(bootstrap, [route.sink], settings.deadletter_topic, wanted, timeout_s=300)
    )
    assert worker.poll() is None, "the worker died: a codec it cannot decode?"
    counted = outcome(
        "Kafka's console producer: none, gzip, snappy, lz4, zstd and a zstd topic",
        wanted,
        labelled,
        dead,
    )
    assert (counted.labelled, counted.dead_lettered, counted.lost) == (len(wanted), 0, 0)
