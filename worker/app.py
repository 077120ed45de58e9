"""The Faust application: wiring only. Each agent is a few lines around a plain object.

Message flow: source topic -> `intake.take` (the events Faust delivered, in bulk) ->
`RouteFlow.run` (micro-batches through `Pipeline`, published, then acknowledged; see
`worker/route_flow.py`), so no offset is committed before its labelled or dead-letter record
is on Kafka.

Drift flow: with each batch, the classify agent also publishes its drift samples (one per
served version) to the internal `<app id>-drift-samples` topic, keyed by model. The drift agent
hands each to `DriftFlow.take`, which merges it into that model's window in the `drift-windows`
table (recovered from its changelog after a restart or rebalance), publishes a report when a
window closes and lets `RolloutGuard` roll back a failing candidate.
"""

from __future__ import annotations

import functools
import time

import faust
import orjson

from worker import faust_fixes, intake, metrics
from worker.drift_flow import DriftFlow, DriftMonitor, sample_records
from worker.feedback_join import FeedbackJoin
from worker.inference import Classifier, TritonClassifier
from worker.pipeline import Pipeline
from worker.publishing import BatchProducer, SendAll
from worker.references import ReferenceStore
from worker.registry import RegistryReader
from worker.rollout_guard import RolloutGuard
from worker.route_flow import RouteFlow
from worker.security import faust_credentials, kafka_client_kwargs, triton_client_kwargs
from worker.settings import Route, WorkerSettings
from worker.transactions import TxnPublisher
from worker.txn_producers import (
    OffsetReader,
    TxnProducers,
    before_seek,
    producer_factory,
    request_rejoin,
)
from worker.window import Sample


def _raw_topic(app: faust.App, name: str, **options: int) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


def create_app(settings: WorkerSettings, classifier: Classifier | None = None) -> faust.App:
    """Build the Faust app with one agent per configured route."""
    faust_fixes.apply()
    app = _faust_app(settings)
    transactions = _transactions(app, settings)
    classifier = classifier or TritonClassifier(
        settings.triton_url,
        timeout_s=settings.triton_timeout_s,
        retry_initial_s=settings.triton_retry_initial_s,
        retry_max_s=settings.triton_retry_max_s,
        with_embeddings=settings.drift.enabled,
        tls=triton_client_kwargs(settings),
    )
    # Faust's own aiokafka producer (its settings, connections and TLS), fed whole batches.
    sender = BatchProducer(
        lambda: app.producer._ensure_producer(),  # noqa: SLF001 - Faust has no public accessor
        settings.producer_max_request_bytes,
    )
    registry = RegistryReader(
        settings.kafka_bootstrap_servers, settings.registry_topic, kafka_client_kwargs(settings)
    )
    if settings.drift.enabled:
        _add_drift(app, settings, registry, sender.send_all)
        _add_feedback(app, settings, sender.send_all)
    for route in settings.routes:
        txn = transactions.get(route.source)
        _add_route(app, route, classifier, sender.send_all, settings, registry, txn)
    if settings.metrics_port:
        sources = [route.source for route in settings.routes]
        metrics.add_lag_timer(app, sources, settings.metrics_lag_interval_s)
    return app


def _faust_app(settings: WorkerSettings) -> faust.App:
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return faust.App(
        settings.app_id,
        # Faust would let its own environment variables (BROKER_URL, PRODUCER_ACKS, ...) override
        # these arguments; WorkerSettings is the one source of configuration.
        env={},
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        value_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=settings.producer_max_request_bytes,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_compression_type=settings.producer_compression,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_commit_interval=settings.kafka_commit_interval_s,
        broker_credentials=faust_credentials(settings),
    )


def _transactions(app: faust.App, settings: WorkerSettings) -> dict[str, TxnPublisher]:
    """Exactly-once mode: a `TxnPublisher` per source topic, its producers fenced and
    re-created on every assignment before Faust's seek; at-least-once: none."""
    sources = {route.source for route in settings.routes} if settings.exactly_once else set()
    factory = producer_factory(settings)
    step = settings.transaction_step_timeout_s
    registries = [TxnProducers(topic, settings.app_id, factory, step) for topic in sorted(sources)]
    faust_fixes.configure_exactly_once(sources, [before_seek(registries)] if sources else [])
    return {
        registry.topic: TxnPublisher(
            registry,
            OffsetReader(settings, step),
            group_id=settings.app_id,
            max_request_bytes=settings.producer_max_request_bytes,
            step_timeout_s=step,
            rejoin=functools.partial(request_rejoin, app),
            retry_initial_s=settings.triton_retry_initial_s,
            retry_max_s=settings.triton_retry_max_s,
        )
        for registry in registries
    }


def _add_route(
    app: faust.App,
    route: Route,
    classifier: Classifier,
    send_all: SendAll,
    settings: WorkerSettings,
    registry: RegistryReader,
    txn: TxnPublisher | None,
) -> None:
    extras = None
    if settings.drift.enabled:
        extras = functools.partial(
            sample_records,
            topic=settings.drift_samples_topic,
            model=route.model,
            references=ReferenceStore(settings.model_repository),
        )
    pipeline = Pipeline(route, classifier, settings, registry)
    flow = RouteFlow(pipeline, send_all, settings, extras, txn)

    async def classify(stream: faust.StreamT) -> None:
        try:
            await flow.run(intake.take(stream, settings.max_batch))
        finally:
            if txn is not None:  # after the drain: the last transactions are committed
                await txn.close()

    app.agent(_raw_topic(app, route.source), name=f"classify-{route.source}")(classify)


def _add_feedback(app: faust.App, settings: WorkerSettings, send_all: SendAll) -> None:
    """The feedback join: reviews remembered in a table, feedback joined to them and sent to
    its model's drift window (`worker/feedback_join.py`)."""
    table = app.Table(
        "review-predictions",
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Predictions sent to review, by message id, for joining feedback.",
    )
    join = FeedbackJoin(table, settings, send_all)
    topics = app.topic(
        settings.review_topic,
        settings.feedback_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def feedback_join(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await join.take(event.message)

    app.agent(topics, name="feedback-join")(feedback_join)


def _add_drift(
    app: faust.App, settings: WorkerSettings, registry: RegistryReader, send_all: SendAll
) -> None:
    """The drift agent, its window table and the clock that closes idle windows; reports and
    rollbacks go out through the classify agents' sender."""
    samples = _raw_topic(app, settings.drift_samples_topic, partitions=settings.topic_partitions)
    table = app.Table(
        "drift-windows",
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Open drift window per model.",
    )
    guard = RolloutGuard(
        registry,
        send_all,
        settings.registry_topic,
        max_failure_rate=settings.rollback_max_failure_rate,
        min_agreement=settings.rollback_min_agreement,
        by=f"worker:{settings.app_id}",
    )
    monitor = DriftMonitor.from_settings(ReferenceStore(settings.model_repository), settings.drift)
    flow = DriftFlow(monitor, table, send_all, settings.drift.topic, guard)

    async def drift_windows(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await flow.take(event.message)

    app.agent(samples, name="drift-windows")(drift_windows)
    models = sorted({route.model for route in settings.routes})

    async def tick() -> None:
        for model in models:
            sample = Sample.tick(model, time.time())
            await samples.send(key=model.encode(), value=orjson.dumps(sample.to_dict()))

    app.timer(interval=settings.drift.tick_s, name="drift-tick")(tick)
