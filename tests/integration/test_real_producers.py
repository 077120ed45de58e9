"""Producers no one here wrote, on the real broker and real Triton, counted by message id:
oversized input, a message the pipeline fails on, scraped text full of control characters,
the users' own message shapes, and headers.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.worker_process import worker_env
from tests.integration.data import texts
from tests.integration.faults import collect, outcome
from worker.client import Record, produce, read_topics
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

# Dirty text -> what the model must read instead, written out by hand: cp1252 mojibake repaired,
# other control characters as spaces.
DIRTY = [
    ("pre\u0096war prices rose", "pre\u2013war prices rose"),
    ("the team\u0092s coach \u0097 again", "the team\u2019s coach \u2014 again"),
    ("\u0093best film\u0094 of the year", "\u201cbest film\u201d of the year"),
    ("\u0091quoted\u0092 and a bullet \u0095 here", "\u2018quoted\u2019 and a bullet \u2022 here"),
    ("wait for it\u0085 nothing happened", "wait for it\u2026 nothing happened"),
    ("usenet post with a back\bspace in it", "usenet post with a back space in it"),
    ("page one\fpage two of the report", "page one page two of the report"),
    ("next\u0085line markets fell", "next\u2026line markets fell"),
]
MARKER = "INJECTED-FAILURE-42"


def _settings(base: WorkerSettings, routes: list[Route], **update) -> WorkerSettings:
    settings = base.model_copy(update={"routes": routes, **update})
    asyncio.run(ensure_topics(settings))
    return settings


def _body(record: Record) -> dict:
    return orjson.loads(record.value)


def test_oversized_failing_and_dirty_messages_never_stall_the_route(routes_settings, start_worker):
    """One 900 KB message, then 500 normal ones, one of which the pipeline fails on, and the
    dirty texts beside their clean twins, on a 4-partition topic and one worker."""
    route = routes_settings.routes[0]
    settings = _settings(routes_settings, [route], inject_failure_text=MARKER)
    big_value = orjson.dumps({"id": "big", "text": "word " * 180_000})
    assert len(big_value) > 900_000
    normal = [
        (f"n-{i}".encode(), orjson.dumps({"id": f"n-{i}", "text": t}))
        for i, t in enumerate(texts("news", 500))
    ]
    normal[250] = (b"n-250", orjson.dumps({"id": "n-250", "text": f"markets {MARKER} rally"}))
    pairs = []
    for i, (dirty, clean) in enumerate(DIRTY):
        pairs += [
            (f"dirty-{i}".encode(), orjson.dumps({"id": f"dirty-{i}", "text": dirty})),
            (f"clean-{i}".encode(), orjson.dumps({"id": f"clean-{i}", "text": clean})),
        ]
    worker = start_worker(settings)
    bootstrap = settings.kafka_bootstrap_servers
    wanted = {"big"} | {k.decode() for k, _ in normal + pairs}

    async def scenario():
        await produce(bootstrap, route.source, [(b"big", big_value)])
        await produce(bootstrap, route.source, normal + pairs)
        return await collect(bootstrap, [route.sink], settings.deadletter_topic, wanted)

    labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None, "the worker must survive every one of them"
    counted = outcome("900 KB, failing and dirty messages on one route", wanted, labelled, dead)
    assert (counted.lost, counted.duplicates, counted.dead_lettered) == (0, 0, 2)

    letters = {r.key: _body(r) for r in dead if r.key in (b"big", b"n-250")}
    big = letters[b"big"]
    assert big["error"]["type"] == "message_too_large"
    assert big["value_size"] == len(big_value) and big["value_truncated"] is True
    assert big_value.startswith(base64.b64decode(big["value_b64"]))
    failed = letters[b"n-250"]["error"]
    assert failed["type"] == "processing_error"
    assert "RuntimeError" in failed["detail"] and MARKER in failed["detail"]

    scores = {_body(r)["id"]: _body(r)["scores"] for r in labelled}
    for i in range(len(DIRTY)):  # the model read the repaired text: the same scores
        # (up to float noise from the padding of different batches; the tokenizer alone would
        # drop the control character, joining the words around it into other tokens)
        assert scores[f"dirty-{i}"] == pytest.approx(scores[f"clean-{i}"], abs=1e-5), DIRTY[i]


def test_each_route_reads_its_producers_own_shape_and_headers_round_trip(
    routes_settings, start_worker
):
    tag = routes_settings.app_id.rsplit("-", 1)[-1]
    pointers = Route(
        source=f"shop.reviews.{tag}",
        model="review_sentiment",
        sink=f"shop.labelled.{tag}",
        text_field="/review/content",
        title_field="/review/headline",
        id_field="/uuid",
        keep_input=["/shop", "/review/stars"],
    )
    plain = Route(
        source=f"plain.{tag}",
        model="news_topic",
        sink=f"plain.labelled.{tag}",
        value_format="text",
        id_from="key",
    )
    coordinates = Route(
        source=f"noids.{tag}",
        model="news_topic",
        sink=f"noids.labelled.{tag}",
        text_field="/body",
        id_from="coordinates",
        keep_input="all",
    )
    settings = _settings(routes_settings, [pointers, plain, coordinates], drop_headers=["X-Secret"])
    reviews = texts("reviews", 20)
    news = texts("news", 40)
    trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    shop = [
        (
            None,
            orjson.dumps(
                {"uuid": f"u-{i}", "shop": "acme", "review": {"content": t, "stars": i % 5}}
            ),
            [("traceparent", trace), ("x-secret", b"hunter2")],
        )
        for i, t in enumerate(reviews)
    ]
    missing = [  # the text is elsewhere: each names the pointer it misses
        (f"miss-{i}".encode(), orjson.dumps({"uuid": f"miss-{i}", "body": f"x {i}"}))
        for i in range(500)
    ]
    plain_msgs = [(f"p-{i}".encode(), t.encode()) for i, t in enumerate(news[:20])]
    no_ids = [(None, orjson.dumps({"body": t, "n": i})) for i, t in enumerate(news[20:])]
    bootstrap = settings.kafka_bootstrap_servers
    sinks = [r.sink for r in settings.routes]
    worker = start_worker(settings)

    async def scenario():
        await produce(bootstrap, pointers.source, [*shop, *missing])
        await produce(bootstrap, plain.source, plain_msgs)
        await produce(bootstrap, coordinates.source, no_ids)
        labelled = await read_topics(bootstrap, sinks, expect=60, timeout_s=240, settle_s=2)
        dead = await read_topics(
            bootstrap, [settings.deadletter_topic], expect=500, timeout_s=60, settle_s=2
        )
        return labelled, dead

    labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None
    by_topic: dict[str, list[Record]] = {}
    for record in labelled:
        by_topic.setdefault(record.topic, []).append(record)

    shop_out = {_body(r)["id"]: r for r in by_topic[pointers.sink]}
    assert set(shop_out) == {f"u-{i}" for i in range(20)}
    for i in range(20):
        record = shop_out[f"u-{i}"]
        assert _body(record)["meta"] == {"/shop": "acme", "/review/stars": i % 5}
        headers = dict(record.headers)
        assert headers["traceparent"] == trace
        assert "x-secret" not in headers
        assert headers["labelstream-model"] == b"review_sentiment"
        assert headers["content-type"] == b"application/json"
        assert headers["labelstream-version"] == _body(record)["model"]["version"].encode()

    assert {_body(r)["id"] for r in by_topic[plain.sink]} == {f"p-{i}" for i in range(20)}
    coordinate_out = by_topic[coordinates.sink]
    assert len(coordinate_out) == 20
    for record in coordinate_out:
        body = _body(record)
        topic, partition, offset = body["id"].rsplit("-", 2)
        assert topic == coordinates.source and partition.isdigit() and offset.isdigit()
        assert body["meta"]["body"] == news[20 + body["meta"]["n"]]

    letters = [_body(r) for r in dead]
    assert len(letters) == 500 and {r.key for r in dead} == {k for k, _ in missing}
    for letter in letters:
        assert letter["error"] == {
            "type": "missing_field",
            "detail": "no value at /review/content (text_field)",
        }
    wanted = {f"miss-{i}" for i in range(500)} | set(shop_out)
    counted = outcome(
        "the users' own shapes: pointers, headers, 500 misses", wanted, labelled, dead
    )
    assert (counted.lost, counted.duplicates) == (0, 0)


def test_worker_refuses_a_request_limit_above_the_topics(routes_settings, tmp_path):
    """An output topic whose max.message.bytes is below PRODUCER_MAX_REQUEST_BYTES would
    refuse records the worker thinks fit: `worker run` stops before consuming, saying so."""
    sink = routes_settings.routes[0].sink + ".small"

    async def small_sink():
        admin = AIOKafkaAdminClient(bootstrap_servers=routes_settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            topic = NewTopic(sink, 1, 1, topic_configs={"max.message.bytes": "200000"})
            await admin.create_topics([topic])
        finally:
            await admin.close()

    asyncio.run(small_sink())
    route = routes_settings.routes[0].model_copy(update={"sink": sink})
    settings = routes_settings.model_copy(update={"routes": [route]})
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=worker_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"max.message.bytes of {sink} (200000)" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_triton_bytes_tensor_carries_nul_and_c1_characters(stack):
    """What reaches Triton unnormalised still classifies: BYTES elements are length-prefixed,
    so a NUL (or any control character) inside a text neither cuts nor breaks the request.
    The worker normalises before sending anyway; this pins down why no text is refused for it."""
    from worker.inference import TritonClassifier

    texts_in = ["markets\x00fell sharply", "\x00", "pre\u0096war\x08 prices", "plain text"]

    async def classify():
        classifier = TritonClassifier(stack.settings.triton_url, retry_max_s=1.0)
        try:
            return await classifier.classify("news_topic", texts_in)
        finally:
            await classifier.close()

    answer = asyncio.run(classify())
    assert answer.probs.shape == (len(texts_in), len(answer.labels))
    assert abs(float(answer.probs.sum()) - len(texts_in)) < 1e-3
