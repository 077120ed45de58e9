"""A worker's automatic rollback races a `trainer promote` on the real broker and Triton.

Both writers read the same registry revision. Whichever record reaches the topic first wins;
every reader rejects the other, its writer publishes the winner again, and the topic keeps both
attempts: the record ends consistent, with an audit trail of the two.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from aiokafka import AIOKafkaProducer

import trainer.rollout as rollout_module
from tests.integration.test_hot_swap import copy_version
from trainer.rollout import Rollout, RolloutError
from worker.client import read_topics
from worker.publishing import BatchProducer
from worker.registry import ModelEntry, RegistryReader
from worker.rollout_guard import RolloutGuard
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

FAILING = {"candidate_failure_rate": 0.5}


@pytest.fixture
def race(stack, routes_settings):
    """A model with versions 1 (active) and 2 (a 50 % canary) on a registry topic of its own,
    and the worker's side: a registry reader and a `RolloutGuard` sending through the
    worker's `BatchProducer`."""
    tag = uuid.uuid4().hex[:8]
    model = f"race_{tag}"
    settings = routes_settings.model_copy(update={"registry_topic": f"labelstream.models.{tag}"})
    asyncio.run(ensure_topics(settings))
    repository = settings.model_repository
    copy_version(repository, model)
    copy_version(repository, model)
    steps = Rollout(
        model=model,
        repository=repository,
        triton_url=settings.triton_url,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        registry_topic=settings.registry_topic,
        grace_s=0.5,
        by="trainer:test",
    )
    steps.publish(1)
    steps.publish(2, canary=0.5)
    return steps, settings


async def worker_side(settings) -> tuple[RolloutGuard, AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    registry = RegistryReader(settings.kafka_bootstrap_servers, settings.registry_topic)
    await registry.ready()
    sender = BatchProducer(lambda: producer, settings.producer_max_request_bytes)
    guard = RolloutGuard(
        registry, sender.send_all, settings.registry_topic, 0.05, 0.5, by="worker:test"
    )
    return guard, producer


def failing(model: str) -> dict:
    return {**FAILING, "model": {"name": model, "version": "2"}}


async def audit(settings, model: str) -> tuple[ModelEntry, list, list[ModelEntry]]:
    """A fresh reader's final entry and decisions, and every record on the topic."""
    reader = RegistryReader(settings.kafka_bootstrap_servers, settings.registry_topic)
    try:
        await reader.ready()
        decisions = [(d.entry.event, d.accepted) for d in reader.history]
        final = reader.get(model)
    finally:
        await reader.close()
    records = await read_topics(settings.kafka_bootstrap_servers, [settings.registry_topic])
    return final, decisions, [ModelEntry.model_validate_json(r.value) for r in records]


def test_a_rollback_first_wins_and_the_promote_fails_asking_to_run_again(race, monkeypatch):
    steps, settings = race
    read, resume = threading.Event(), threading.Event()
    serve = rollout_module.serve_versions

    def serve_after_the_rollback(*args, **kwargs):
        read.set()  # the promote has read the registry; the rollback writes now
        resume.wait(60)
        return serve(*args, **kwargs)

    monkeypatch.setattr(rollout_module, "serve_versions", serve_after_the_rollback)

    async def scenario() -> None:
        guard, producer = await worker_side(settings)
        try:
            promote = asyncio.create_task(asyncio.to_thread(steps.promote, 2))
            await asyncio.to_thread(read.wait, 60)
            assert await guard.check(failing(steps.model)) is True
            resume.set()
            with pytest.raises(RolloutError, match="run the step again"):
                await promote
        finally:
            resume.set()
            await guard.registry.close()
            await producer.stop()

    asyncio.run(scenario())
    final, decisions, records = asyncio.run(audit(settings, steps.model))
    assert (final.active, final.candidate, final.event) == ("1", None, "auto_rollback")
    assert decisions[-2:] == [("auto_rollback", True), ("promote", False)]
    assert [r.event for r in records][-3:] == ["auto_rollback", "promote", "auto_rollback"]
    assert records[-1].model_dump() == final.model_dump()  # what compaction keeps is the winner


def test_a_promote_first_wins_and_the_rollback_is_rejected(race):
    steps, settings = race

    async def scenario() -> bool:
        guard, producer = await worker_side(settings)
        try:
            rolled = guard.plan(failing(steps.model))  # read before the promote
            assert rolled is not None
            await asyncio.to_thread(steps.promote, 2)
            return await guard.commit(rolled)
        finally:
            await guard.registry.close()
            await producer.stop()

    assert asyncio.run(scenario()) is False
    final, decisions, records = asyncio.run(audit(settings, steps.model))
    assert (final.active, final.previous, final.event) == ("2", "1", "promote")
    assert decisions[-2:] == [("promote", True), ("auto_rollback", False)]
    assert [r.event for r in records][-3:] == ["promote", "auto_rollback", "promote"]
    assert records[-1].model_dump() == final.model_dump()
