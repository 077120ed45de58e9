"""The Faust application: one agent per route, each a short loop around `Pipeline`.

Message flow: source topic -> `take_events` micro-batch -> `Pipeline.process` (validate, infer,
label) -> publish every record and wait for the broker's ack -> Faust acks the events, so no
offset is committed before its labelled or dead-letter record is on Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust
import structlog
from faust.types import EventT

from worker.inference import Classifier, TritonClassifier, backoff_delays
from worker.messages import OutRecord, RawMessage
from worker.pipeline import Pipeline
from worker.settings import Route, WorkerSettings

log = structlog.get_logger(__name__)


def _raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def _to_raw(event: EventT) -> RawMessage:
    message = event.message
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp=message.timestamp,
    )


async def publish(records: Sequence[OutRecord], topics: dict[str, faust.TopicT]) -> None:
    """Send all records, then wait until the broker acknowledged every one."""
    pending = [await topics[r.topic].send(key=r.key, value=r.value) for r in records]
    await asyncio.gather(*pending)


def make_agent(pipeline: Pipeline, topics: dict[str, faust.TopicT], settings: WorkerSettings):
    """The agent body for one route; a failed batch is retried whole, never skipped."""

    async def classify(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait_s):
            raws = [_to_raw(e) for e in events]
            delays = backoff_delays(settings.triton_retry_initial_s, settings.triton_retry_max_s)
            for delay in delays:
                try:
                    result = await pipeline.process(raws)
                    await publish(result.records, topics)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("batch_failed", route=pipeline.route.source, retry_in_s=delay)
                    await asyncio.sleep(delay)
            log.info(
                "batch",
                route=pipeline.route.source,
                model=pipeline.route.model,
                size=len(raws),
                labelled=result.labelled,
                dead_letters=result.rejected,
                versions=sorted(result.versions),
                inference_ms=round(result.inference_ms, 2),
            )

    return classify


def create_app(settings: WorkerSettings, classifier: Classifier | None = None) -> faust.App:
    """Build the Faust app with one agent per configured route."""
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        value_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_commit_interval=settings.kafka_commit_interval_s,
    )
    classifier = classifier or TritonClassifier(
        settings.triton_url,
        timeout_s=settings.triton_timeout_s,
        retry_initial_s=settings.triton_retry_initial_s,
        retry_max_s=settings.triton_retry_max_s,
    )
    deadletter = _raw_topic(app, settings.deadletter_topic)
    for route in settings.routes:
        _add_route(app, route, classifier, deadletter, settings)
    return app


def _add_route(
    app: faust.App,
    route: Route,
    classifier: Classifier,
    deadletter: faust.TopicT,
    settings: WorkerSettings,
) -> None:
    topics = {route.sink: _raw_topic(app, route.sink), settings.deadletter_topic: deadletter}
    pipeline = Pipeline(route, classifier, settings)
    agent = make_agent(pipeline, topics, settings)
    app.agent(_raw_topic(app, route.source), name=f"classify-{route.source}")(agent)
