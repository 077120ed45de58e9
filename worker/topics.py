"""Create the topics the worker reads and writes before any worker starts.

Faust never creates source topics, and a consumer that subscribes first would auto-create them
with the broker's default partition count; creating them up front fixes the partitioning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from worker.security import kafka_client_kwargs
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


def topic_names(settings: WorkerSettings, extra: Iterable[str] = ()) -> list[str]:
    """Every route's source and sink, the dead-letter, review, feedback and drift topics and
    `extra`, no repeats. Review and feedback are keyed by id with `topic_partitions` partitions
    each: the feedback join reads both in one agent.

    The drift-samples topic must have `topic_partitions` partitions: the drift table's
    changelog is partitioned like it.
    """
    names = [t for route in settings.routes for t in (route.source, route.sink)]
    names += [settings.deadletter_topic, settings.registry_topic]
    names += [settings.review_topic, settings.feedback_topic]
    if settings.drift.enabled:
        names += [settings.drift.topic, settings.drift_samples_topic]
    names += extra
    return list(dict.fromkeys(names))


async def ensure_topics(
    settings: WorkerSettings, extra: Iterable[str] = (), timeout: float = 30.0
) -> None:
    """Create the worker's missing topics (existing ones are left alone) and wait until all
    have leaders."""
    await ensure_named_topics(settings, topic_names(settings, extra), timeout)


async def ensure_named_topics(
    settings: WorkerSettings, names: list[str], timeout: float = 30.0
) -> None:
    """`ensure_topics` for just `names` (`worker review` needs only its two)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        **kafka_client_kwargs(settings),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await _create(admin, settings, missing, timeout)
        await _wait_for_leaders(admin, settings, names, timeout)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, settings: WorkerSettings, names: list[str], timeout: float
) -> None:
    new = [
        NewTopic(
            name,
            settings.topic_partitions,
            settings.topic_replication_factor,
            topic_configs={"retention.ms": str(settings.topic_retention_ms)},
        )
        if name != settings.registry_topic
        else NewTopic(
            name,
            1,
            settings.topic_replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        for name in names
    ]
    response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
    for topic, code, *rest in response.topic_errors:
        error = for_code(code)
        if code and error is not TopicAlreadyExistsError:
            message = rest[0] if rest else ""
            raise error(f"could not create topic {topic!r}: {message}")
    log.info(
        "topics created",
        topics=names,
        partitions=settings.topic_partitions,
        replication=settings.topic_replication_factor,
        retention_ms=settings.topic_retention_ms,
    )


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, settings: WorkerSettings, names: list[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    pending = names
    while True:
        described = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in described
            if t["error_code"]
            or not t["partitions"]
            or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders after {timeout:.0f}s: {pending}")
        await asyncio.sleep(0.2)
    for t in described:
        if t["topic"] == settings.registry_topic:
            continue  # one compacted partition: a handful of records, read whole by everyone
        if len(t["partitions"]) != settings.topic_partitions:
            log.warning(
                "existing topic has a different partition count",
                topic=t["topic"],
                partitions=len(t["partitions"]),
                expected=settings.topic_partitions,
            )


class RequestLimitError(RuntimeError):
    """PRODUCER_MAX_REQUEST_BYTES is above what the broker accepts on an output topic."""


async def check_request_limit(settings: WorkerSettings, timeout: float = 30.0) -> int:
    """Refuse a producer limit that an output topic's `max.message.bytes` (the broker's
    `message.max.bytes` unless the topic overrides it) is below: the broker would refuse a
    record that the worker thinks fits. Returns the smallest topic limit."""
    outputs = [route.sink for route in settings.routes]
    outputs += [settings.deadletter_topic, settings.review_topic]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        **kafka_client_kwargs(settings),
    )
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
            for name in dict.fromkeys(outputs)
        ]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    limits = {
        name: int(value)
        for response in responses
        for _code, _message, _type, name, entries in response.resources
        for entry_name, value, *_ in entries
        if entry_name == "max.message.bytes"
    }
    too_small = {
        name: limit for name, limit in limits.items() if limit < settings.producer_max_request_bytes
    }
    if too_small:
        listed = ", ".join(f"{name} ({limit})" for name, limit in sorted(too_small.items()))
        raise RequestLimitError(
            f"PRODUCER_MAX_REQUEST_BYTES={settings.producer_max_request_bytes} is above "
            f"max.message.bytes of {listed}: lower it or raise the topics' limit"
        )
    return min(limits.values(), default=settings.producer_max_request_bytes)
