"""The worker's Prometheus endpoint, scraped over HTTP after real traffic (Kafka + Triton)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.data import texts
from worker.client import produce, read_topics

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the endpoint as {(name, labels): value}; empty while it is not up."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except (urllib.error.URLError, ConnectionError):
        return {}
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_endpoint_counts_real_traffic(routes_settings, start_worker):
    port = free_port()
    drift = routes_settings.drift.model_copy(update={"window_messages": 10})
    settings = routes_settings.model_copy(
        update={"drift": drift, "metrics_port": port, "metrics_lag_interval_s": 1.0}
    )
    news_route, reviews_route = settings.routes
    news = [
        (f"n-{i}".encode(), orjson.dumps({"id": f"n-{i}", "text": t}))
        for i, t in enumerate(texts("news", 30))
    ]
    reviews = [
        (f"r-{i}".encode(), orjson.dumps({"id": f"r-{i}", "text": t}))
        for i, t in enumerate(texts("reviews", 20))
    ]
    malformed = [(None, b"{not json"), (None, b'{"id": "x"}')]

    start_worker(settings)
    bootstrap = settings.kafka_bootstrap_servers

    async def traffic() -> None:
        await produce(bootstrap, news_route.source, news + malformed)
        await produce(bootstrap, reviews_route.source, reviews)
        await read_topics(
            bootstrap, [news_route.sink, reviews_route.sink], expect=50, timeout_s=180, settle_s=1
        )

    asyncio.run(traffic())

    news_src, reviews_src = news_route.source, reviews_route.source
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(port)
        done = (
            total(samples, "labelstream_messages_in_total", route=news_src) == 32
            and total(samples, "labelstream_messages_in_total", route=reviews_src) == 20
            and total(samples, "labelstream_drift_reports_total") >= 1
            and total(samples, "labelstream_consumer_lag", topic=news_src) == 0
            and any(n == "labelstream_consumer_lag" for n, _ in samples)
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(1)

    assert total(samples, "labelstream_messages_in_total", route=news_src) == 32
    assert total(samples, "labelstream_messages_in_total", route=reviews_src) == 20
    assert (
        total(samples, "labelstream_messages_out_total", route=news_src, model="news_topic") == 30
    )
    assert (
        total(
            samples, "labelstream_messages_out_total", route=reviews_src, model="review_sentiment"
        )
        == 20
    )
    assert (
        total(samples, "labelstream_dead_letters_total", route=news_src, reason="invalid_json") == 1
    )
    assert total(samples, "labelstream_dead_letters_total", route=news_src) == 2
    assert total(samples, "labelstream_batch_size_count", route=news_src) >= 1
    assert total(samples, "labelstream_batch_size_sum") == 52
    assert total(samples, "labelstream_triton_request_seconds_count", outcome="ok") >= 2
    assert total(samples, "labelstream_triton_request_seconds_sum", model="news_topic") > 0
    assert total(samples, "labelstream_active_model_version", model="news_topic", version="1") == 1
    assert total(samples, "labelstream_active_model_version", model="review_sentiment") == 1
    assert total(samples, "labelstream_drift_reports_total") >= 1
    assert any(n == "labelstream_drift_status" for n, _ in samples)  # 0 (ok) counts as a status
    lag = {ls for n, ls in samples if n == "labelstream_consumer_lag"}
    assert {dict(ls)["topic"] for ls in lag} <= {news_src, reviews_src}
    assert lag, "consumer lag gauge has no series"
