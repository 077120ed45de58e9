"""Worker Prometheus metrics: per-batch counters, active version, drift status, consumer lag."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from prometheus_client import REGISTRY

from worker import metrics
from worker.labelling import dead_letter_record
from worker.messages import OutRecord, RawMessage
from worker.pipeline import BatchResult, Observed
from worker.validation import Rejection

DEADLETTER = "dl"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dead(reason: str) -> OutRecord:
    raw = RawMessage("src", 0, 1, None, b"x", 0.0)
    return dead_letter_record(
        raw, Rejection(reason, "detail"), topic=DEADLETTER, now=datetime.now(UTC)
    )


def test_observe_batch_counts_in_out_dead_letters_by_reason_and_batch_size() -> None:
    route = f"news-{uuid.uuid4().hex[:6]}"
    labelled = OutRecord("sink", b"k", b"{}")
    result = BatchResult(
        records=[labelled, dead("invalid_json"), labelled, dead("invalid_json"), dead("empty")],
        labelled=2,
        rejected=3,
        observed={"7": Observed(labels=["a"])},
        inference_ms=12.0,
    )
    metrics.observe_batch(route, "news_topic", 5, result, DEADLETTER)
    assert value("labelstream_messages_in_total", route=route) == 5
    assert value("labelstream_messages_out_total", route=route, model="news_topic") == 2
    assert value("labelstream_dead_letters_total", route=route, reason="invalid_json") == 2
    assert value("labelstream_dead_letters_total", route=route, reason="empty") == 1
    assert value("labelstream_batch_size_count", route=route) == 1
    assert value("labelstream_batch_size_sum", route=route) == 5
    assert value("labelstream_batch_seconds_sum", route=route) == 0.012
    assert value("labelstream_active_model_version", model="news_topic", version="7") == 1


def test_active_version_keeps_one_series_per_model_and_ignores_candidates() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    metrics.set_active_version(model, "1")
    result = BatchResult(
        records=[],
        observed={"2": Observed(labels=["a"]), "3": Observed(labels=["a"], role="canary")},
        candidate_failures={"3": 4},
    )
    metrics.observe_batch("r", model, 0, result, DEADLETTER)
    assert (
        REGISTRY.get_sample_value(
            "labelstream_active_model_version", {"model": model, "version": "1"}
        )
        is None
    )
    assert value("labelstream_active_model_version", model=model, version="2") == 1
    assert value("labelstream_active_model_version", model=model, version="3") == 0
    assert value("labelstream_candidate_failures_total", model=model, version="3") == 4


def test_drift_status_gauge_follows_the_last_report() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    metrics.observe_drift({"model": {"name": model, "version": "1"}, "status": "warn"})
    assert value("labelstream_drift_status", model=model, version="1") == 1
    metrics.observe_drift({"model": {"name": model, "version": "2"}, "status": "drift"})
    assert (
        REGISTRY.get_sample_value("labelstream_drift_status", {"model": model, "version": "1"})
        is None
    )
    assert value("labelstream_drift_status", model=model, version="2") == 2
    assert value("labelstream_drift_reports_total", model=model, status="drift") == 1


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, assigned: set[TP], high: dict[TP, int], committed: dict[TP, int]) -> None:
        self.assigned = assigned
        self.high = high
        self._committed_offset = committed

    def assignment(self) -> set[TP]:
        return self.assigned

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        return {tp: self.high[tp] for tp in partitions}

    async def position(self, tp: TP) -> int | None:
        return 3


async def test_consumer_lag_is_highwater_minus_committed_per_owned_source_partition() -> None:
    src = f"src-{uuid.uuid4().hex[:6]}"
    a, b, other = TP(src, 0), TP(src, 1), TP("drift-samples", 0)
    consumer = FakeConsumer({a, b, other}, {a: 100, b: 10, other: 5}, {a: 40})
    lags = await metrics.update_lag(consumer, [src])
    assert lags == {(src, 0): 60, (src, 1): 7}  # b: no commit yet, its position (3) stands in
    assert value("labelstream_consumer_lag", topic=src, partition="0") == 60
    consumer.assigned = {b}  # a rebalance took partition 0 away
    await metrics.update_lag(consumer, [src])
    assert (
        REGISTRY.get_sample_value("labelstream_consumer_lag", {"topic": src, "partition": "0"})
        is None
    )
    assert value("labelstream_consumer_lag", topic=src, partition="1") == 7


def test_endpoint_serves_the_metrics_over_http() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics.start_metrics_server(port, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in ("labelstream_messages_in_total", "labelstream_triton_request_seconds"):
        assert name in body


def test_reviews_are_counted_per_route_and_model() -> None:
    route = f"news-{uuid.uuid4().hex[:6]}"
    copy = OutRecord("labelstream.review", b"k", b"{}")
    result = BatchResult(records=[], labelled=3, reviews=[copy, copy])
    metrics.observe_batch(route, "news_topic", 3, result, DEADLETTER)
    assert value("labelstream_reviews_total", route=route, model="news_topic") == 2


def test_a_reports_feedback_sets_the_live_accuracy_of_each_version() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    report = {
        "model": {"name": model, "version": "2"},
        "status": "ok",
        "feedback": {"1": {"accuracy": 0.75}, "2": {"accuracy": None}},
    }
    metrics.observe_drift(report)
    assert value("labelstream_live_accuracy", model=model, version="1") == 0.75
    assert (
        REGISTRY.get_sample_value("labelstream_live_accuracy", {"model": model, "version": "2"})
        is None
    ), "no corrections: no figure"
