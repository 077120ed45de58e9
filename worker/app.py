"""The Faust application: one agent per route, each a short loop around `Pipeline`.

Message flow: source topic -> `intake.take` (the events Faust delivered, in bulk) -> `Dispatcher`
(micro-batches, several in flight) -> `Pipeline.process` (validate, infer, label) ->
`publishing.publish` (one produce batch per partition, wait for the broker's acks) ->
`intake.ack`, so no offset is committed before its labelled or dead-letter record is on Kafka.

Drift flow: with each batch, the classify agent also publishes its drift samples (one per
served version) to the internal `<app id>-drift-samples` topic, keyed by model. The drift agent
merges them into that model's window in the `drift-windows` table (recovered from its changelog
after a restart or rebalance) and publishes a report to the drift topic when a window closes.
One partition owner per model means one report per model and window, however many workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import faust
import orjson
import structlog
from faust.types import EventT

from worker import faust_fixes, intake, metrics
from worker.batching import Dispatcher
from worker.drift import Thresholds
from worker.drift_flow import DriftMonitor, batch_samples
from worker.failures import isolate
from worker.inference import Classifier, TritonClassifier
from worker.messages import OutRecord, RawMessage
from worker.pipeline import BatchResult, Pipeline
from worker.publishing import BatchProducer, SendAll, publish
from worker.references import ReferenceStore
from worker.registry import RegistryReader, auto_rollback
from worker.security import faust_credentials, kafka_client_kwargs, triton_client_kwargs
from worker.settings import Route, WorkerSettings
from worker.window import Sample, WindowPolicy

# What else a classified batch publishes besides its records (the drift samples), if anything.
Extras = Callable[[BatchResult], list[OutRecord]]

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
        headers=tuple(message.headers or ()),
    )


Outcome = tuple[BatchResult, list[OutRecord]]


def make_agent(
    pipeline: Pipeline,
    send_all: SendAll,
    settings: WorkerSettings,
    extras: Extras | None = None,
):
    """The agent body for one route.

    Consumed events go to a `Dispatcher`, which keeps up to `BATCHES_IN_FLIGHT` batches at
    Triton and publishes them in the order they were consumed. An event is acknowledged only
    after its record is on Kafka. A batch that fails transiently is retried whole; any other
    failure is isolated to its message by `worker.failures.isolate` (a `processing_error`
    dead letter), so no message can stall the route.
    """
    route = pipeline.route
    retry = {
        "retry_initial_s": settings.triton_retry_initial_s,
        "retry_max_s": settings.triton_retry_max_s,
    }

    async def attempt(raws: Sequence[RawMessage]) -> Outcome:
        result = await pipeline.process(raws)
        return result, extras(result) if extras else []

    def fail_one(raw: RawMessage, exc: BaseException) -> Outcome:
        return pipeline.failed(raw, exc), []

    async def process(events: list[EventT]) -> list[Outcome]:
        raws = [_to_raw(e) for e in events]
        return await isolate(raws, attempt, fail_one, what=route.source, **retry)

    async def finish(events: list[EventT], outcomes: list[Outcome]) -> None:
        records = [r for result, extra in outcomes for r in (*result.records, *extra)]
        await publish(records, send_all, refused=pipeline.refused, **retry)
        intake.ack(events)
        for result, _ in outcomes:
            metrics.observe_batch(
                route.source, route.model, len(result.records), result, settings.deadletter_topic
            )
        log.info(
            "batch",
            route=route.source,
            model=route.model,
            size=len(events),
            labelled=sum(result.labelled for result, _ in outcomes),
            dead_letters=sum(result.rejected for result, _ in outcomes),
            versions=sorted({v for result, _ in outcomes for v in result.versions}),
            inference_ms=round(sum(result.inference_ms for result, _ in outcomes), 2),
        )

    async def classify(stream: faust.StreamT) -> None:
        if pipeline.registry is not None:
            await pipeline.registry.ready()  # know the serving versions before the first batch
        dispatcher = Dispatcher(
            max_batch=settings.max_batch,
            in_flight=settings.batches_in_flight,
            process=process,
            finish=finish,
        )
        async with dispatcher:
            try:
                async for events in intake.take(stream, settings.max_batch):
                    await dispatcher.add(events)
            finally:
                # Stopping: let the batches in flight publish and acknowledge, so the commit
                # on stop covers them; whatever is not done in time is consumed again.
                with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
                    await asyncio.wait_for(
                        asyncio.shield(dispatcher.drain()), settings.drain_timeout_s
                    )

    return classify


def create_app(settings: WorkerSettings, classifier: Classifier | None = None) -> faust.App:
    """Build the Faust app with one agent per configured route."""
    faust_fixes.apply()
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
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
        # One produce batch per partition and worker batch (worker/publishing.py): room for a
        # whole batch of labelled records, never above the request limit.
        producer_max_batch_size=min(settings.producer_max_request_bytes, 256 * 1024),
        producer_compression_type=(
            None if settings.output_compression == "none" else settings.output_compression
        ),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_commit_interval=settings.kafka_commit_interval_s,
        broker_credentials=faust_credentials(settings),
    )
    classifier = classifier or TritonClassifier(
        settings.triton_url,
        timeout_s=settings.triton_timeout_s,
        retry_initial_s=settings.triton_retry_initial_s,
        retry_max_s=settings.triton_retry_max_s,
        with_embeddings=settings.drift_enabled,
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
    samples = None
    if settings.drift_enabled:
        samples = _add_drift(app, settings, registry, sender.send_all)
    for route in settings.routes:
        _add_route(app, route, classifier, sender, settings, samples, registry)
    if settings.metrics_port:
        sources = [route.source for route in settings.routes]
        metrics.add_lag_timer(app, sources, settings.metrics_lag_interval_s)
    return app


def _add_route(
    app: faust.App,
    route: Route,
    classifier: Classifier,
    sender: BatchProducer,
    settings: WorkerSettings,
    samples: faust.TopicT | None,
    registry: RegistryReader,
) -> None:
    pipeline = Pipeline(route, classifier, settings, registry)
    extras = None
    if samples is not None:
        references = ReferenceStore(settings.model_repository)

        def extras(result: BatchResult) -> list[OutRecord]:
            found = batch_samples(result, route.model, references, time.time())
            return [_sample_record(settings.drift_samples_topic, sample) for sample in found]

    agent = make_agent(pipeline, sender.send_all, settings, extras)
    app.agent(_raw_topic(app, route.source), name=f"classify-{route.source}")(agent)


async def _guard_rollout(
    report: dict,
    registry: RegistryReader,
    send_all: SendAll,
    settings: WorkerSettings,
) -> None:
    model = report["model"]["name"]
    rolled = auto_rollback(
        registry.get(model),
        report,
        max_failure_rate=settings.rollback_max_failure_rate,
        min_agreement=settings.rollback_min_agreement,
        by=f"worker:{settings.app_id}",
        at=datetime.now(UTC).isoformat(),
    )
    if rolled is None:
        return
    record = OutRecord(settings.registry_topic, model.encode(), rolled.model_dump_json().encode())
    await publish([record], send_all)
    registry.apply(record.key, record.value)  # route away from it now, not after the echo
    log.warning("auto_rollback", model=model, active=rolled.active, reason=rolled.note)


def _sample_record(topic: str, sample: Sample) -> OutRecord:
    return OutRecord(topic, sample.model.encode("utf-8"), orjson.dumps(sample.to_dict()))


def _add_drift(
    app: faust.App, settings: WorkerSettings, registry: RegistryReader, send_all: SendAll
) -> faust.TopicT:
    """The drift agent, its window table and the clock that closes idle windows; reports and
    roll-backs go out through the classify agents' sender.

    The drift agent also guards roll-outs: a closed window whose candidate failed or
    disagreed past its bound removes the candidate from the registry (`auto_rollback`).
    """
    samples = app.topic(
        settings.drift_samples_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    table = app.Table(
        "drift-windows",
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Open drift window per model.",
    )
    monitor = DriftMonitor(
        ReferenceStore(settings.model_repository),
        WindowPolicy(
            max_seconds=settings.drift_window_s,
            max_messages=settings.drift_window_messages,
            sample_size=settings.drift_embedding_sample,
        ),
        Thresholds(
            psi_warn=settings.drift_psi_warn,
            psi_drift=settings.drift_psi_drift,
            ks_warn=settings.drift_ks_warn,
            ks_drift=settings.drift_ks_drift,
            mmd_warn=settings.drift_mmd_warn,
            mmd_drift=settings.drift_mmd_drift,
            deadletter_warn=settings.drift_deadletter_warn,
            deadletter_drift=settings.drift_deadletter_drift,
            alpha=settings.drift_alpha,
        ),
        confidence_threshold=settings.drift_confidence_threshold,
        permutations=settings.drift_permutations,
    )

    async def drift_windows(stream: faust.StreamT) -> None:
        async for event in stream.events():
            sample = Sample.from_dict(orjson.loads(event.value))
            message = event.message
            state, closed = monitor.apply(
                table.get(sample.model),
                sample,
                partition=message.partition,
                offset=message.offset,
                now=time.time(),
            )
            if closed:
                await publish(
                    [
                        OutRecord(settings.drift_topic, sample.model.encode(), orjson.dumps(r))
                        for r in closed
                    ],
                    send_all,
                )
                for report in closed:
                    await _guard_rollout(report, registry, send_all, settings)
                    metrics.observe_drift(report)
                    log.info(
                        "drift_report",
                        model=sample.model,
                        version=report["model"]["version"],
                        window=report["window"]["id"],
                        messages=report["messages"],
                        label_psi=(report.get("labels") or {}).get("psi"),
                        mmd2=(report.get("embedding") or {}).get("mmd2"),
                        status=report["status"],
                        reasons=report["reasons"],
                    )
            table[sample.model] = state

    app.agent(samples, name="drift-windows")(drift_windows)
    models = sorted({route.model for route in settings.routes})

    async def tick() -> None:
        for model in models:
            sample = Sample.tick(model, time.time())
            await samples.send(key=model.encode(), value=orjson.dumps(sample.to_dict()))

    app.timer(interval=settings.drift_tick_s, name="drift-tick")(tick)
    return samples
