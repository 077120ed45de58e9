"""Prometheus metrics of the worker: definitions, per-batch/per-report updates, the endpoint.

Everything is updated once per batch, per Triton request or per drift report, never per message
in the hot path, so metrics cost nothing measurable next to a Triton call. The endpoint is
prometheus-client's own HTTP server in a daemon thread (`METRICS_PORT`, 0 = off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from worker.messages import OutRecord

log = structlog.get_logger(__name__)

MESSAGES_IN = Counter(
    "labelstream_messages_in", "Messages consumed from a route's source topic.", ["route"]
)
MESSAGES_OUT = Counter(
    "labelstream_messages_out",
    "Labelled records published to a route's sink topic.",
    ["route", "model"],
)
DEAD_LETTERS = Counter(
    "labelstream_dead_letters", "Records published to the dead-letter topic.", ["route", "reason"]
)
BATCH_SIZE = Histogram(
    "labelstream_batch_size",
    "Messages per consumed micro-batch.",
    ["route"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_SECONDS = Histogram(
    "labelstream_batch_seconds",
    "Validate + infer + label time of one batch (publishing excluded).",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRITON_LATENCY = Histogram(
    "labelstream_triton_request_seconds",
    "Round trip of one Triton inference request.",
    ["model", "outcome"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge(
    "labelstream_consumer_lag",
    "Highwater minus committed offset, per assigned source partition of this worker.",
    ["topic", "partition"],
)
ACTIVE_VERSION = Gauge(
    "labelstream_active_model_version",
    "1 for the version that labels a model's traffic now (as last seen by this worker).",
    ["model", "version"],
)
CANDIDATE_FAILURES = Counter(
    "labelstream_candidate_failures",
    "Messages a canary version failed on (labelled by the active version instead).",
    ["model", "version"],
)
DRIFT_STATUS = Gauge(
    "labelstream_drift_status",
    "Status of the model's last closed drift window: 0 ok, 1 warn, 2 drift.",
    ["model", "version"],
)
DRIFT_REPORTS = Counter(
    "labelstream_drift_reports", "Drift reports published, by status.", ["model", "status"]
)

FEEDBACK = Counter(
    "labelstream_feedback",
    "Feedback records by outcome: joined to a prediction, or not (invalid, unknown_id, "
    "expired, unknown_label: each also a dead letter).",
    ["outcome"],
)
LIVE_ACCURACY = Gauge(
    "labelstream_live_accuracy",
    "Share of people's corrections that agreed with the version's label, over the "
    "corrections in the model's last drift report.",
    ["model", "version"],
)
REVIEWS = Counter(
    "labelstream_reviews",
    "Labelled records also sent to review (confidence under the route's review_below).",
    ["route", "model"],
)
TRANSACTIONS = Counter(
    "labelstream_transactions",
    "Exactly-once batches by outcome: committed, already_committed (an earlier attempt did), "
    "released (the partition moved to another worker; its events are consumed again there).",
    ["route", "outcome"],
)

DRIFT_LEVELS = {"ok": 0, "warn": 1, "drift": 2}
_active: dict[str, str] = {}
_drift_versions: dict[str, str] = {}


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped
    """Serve /metrics on `port`; 0 leaves metrics off."""
    if port:
        start_http_server(port, addr=addr)
        log.info("metrics_listening", port=port)


def _dead_letter_reason(value: bytes) -> str:
    try:
        return str(orjson.loads(value)["error"]["type"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unknown"


class BatchLike(Protocol):
    """The fields of `worker.pipeline.BatchResult` that metrics read."""

    records: list[OutRecord]
    labelled: int
    rejected: int
    observed: dict[str, Any]
    candidate_failures: dict[str, int]
    inference_ms: float
    reviews: list[OutRecord]


def observe_batch(
    route: str, model: str, consumed: int, result: BatchLike, deadletter_topic: str
) -> None:
    """Count one published batch; dead letters are read back only when the batch has some."""
    MESSAGES_IN.labels(route).inc(consumed)
    BATCH_SIZE.labels(route).observe(consumed)
    BATCH_SECONDS.labels(route).observe(result.inference_ms / 1000.0)
    if result.labelled:
        MESSAGES_OUT.labels(route, model).inc(result.labelled)
    if result.reviews:
        REVIEWS.labels(route, model).inc(len(result.reviews))
    if result.rejected:
        for record in result.records:
            if record.topic == deadletter_topic:
                DEAD_LETTERS.labels(route, _dead_letter_reason(record.value)).inc()
    for version, failed in result.candidate_failures.items():
        CANDIDATE_FAILURES.labels(model, version).inc(failed)
    for version, observed in result.observed.items():
        if getattr(observed, "role", "active") == "active":
            set_active_version(model, version)


def set_active_version(model: str, version: str) -> None:
    """Exactly one active-version series per model: the previous one is removed."""
    previous = _active.get(model)
    if previous == version:
        return
    if previous is not None:
        ACTIVE_VERSION.remove(model, previous)
    ACTIVE_VERSION.labels(model, version).set(1)
    _active[model] = version


def observe_drift(report: dict[str, Any]) -> None:
    """The status of a closed drift window as a gauge (one series per model)."""
    model = report["model"]["name"]
    version = str(report["model"]["version"])
    status = report["status"]
    previous = _drift_versions.get(model)
    if previous is not None and previous != version:
        DRIFT_STATUS.remove(model, previous)
    DRIFT_STATUS.labels(model, version).set(DRIFT_LEVELS.get(status, -1))
    _drift_versions[model] = version
    DRIFT_REPORTS.labels(model, status).inc()
    for fed_version, section in (report.get("feedback") or {}).items():
        if section["accuracy"] is not None:
            LIVE_ACCURACY.labels(model, fed_version).set(section["accuracy"])


class LagConsumer(Protocol):
    """What consumer lag needs from Faust's consumer (`app.consumer`)."""

    def assignment(self) -> set[Any]: ...

    async def highwaters(self, *partitions: Any) -> dict[Any, int]: ...

    async def position(self, tp: Any) -> int | None: ...


async def update_lag(consumer: LagConsumer, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Set the lag gauge for every assigned partition of `topics`; returns what it set.

    Lag = highwater - committed offset (the next offset the group would resume from); before
    the first commit of a partition its fetch position stands in. Series of partitions this
    worker no longer owns (after a rebalance) are removed.
    """
    wanted = set(topics)
    tps = sorted(
        (tp for tp in consumer.assignment() if tp.topic in wanted),
        key=lambda tp: (tp.topic, tp.partition),
    )
    lags: dict[tuple[str, int], int] = {}
    if tps:
        highwaters = await consumer.highwaters(*tps)
        committed = getattr(consumer, "_committed_offset", {})
        for tp in tps:
            high = highwaters.get(tp)
            if high is None:
                continue
            done = committed.get(tp)
            if done is None:
                done = await consumer.position(tp)
            lags[(tp.topic, tp.partition)] = max(0, high - (done or 0))
    _replace_lag_series(lags)
    return lags


_lag_series: set[tuple[str, int]] = set()


def _replace_lag_series(lags: dict[tuple[str, int], int]) -> None:
    for topic, partition in _lag_series - lags.keys():
        CONSUMER_LAG.remove(topic, str(partition))
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)
    _lag_series.clear()
    _lag_series.update(lags)


def add_lag_timer(app: Any, sources: Sequence[str], interval_s: float) -> None:
    """A Faust timer that refreshes the lag gauge; a failure is logged, never raised."""

    async def consumer_lag() -> None:
        try:
            await update_lag(app.consumer, sources)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the worker
            log.warning("consumer_lag_failed", error=str(exc))

    app.timer(interval=interval_s, name="consumer-lag")(consumer_lag)
