"""Kafka with SASL on the real path: a local broker whose only listener requires SASL (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512), a real worker and the real Triton of the session stack.

Right credentials: messages are labelled and dead-lettered as without SASL, and the password
never appears in the worker's log. Wrong credentials: a clear authentication error, not a hang.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaError

from tests.integration.conftest import worker_env
from tests.integration.data import texts
from tests.integration.malformed import MALFORMED
from worker.client import produce, read_topics
from worker.security import kafka_client_kwargs
from worker.settings import Route, WorkerSettings
from worker.stack.kafka import LocalKafka
from worker.stack.local import LocalStack
from worker.stack.state import StateFile
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

USER = "labelstream-worker"
PASSWORD = "s3cret-" + uuid.uuid4().hex


def sasl_env(settings: WorkerSettings, password: str = PASSWORD) -> dict[str, str]:
    env = worker_env(settings)
    env.update(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism,
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=password,
    )
    return env


@pytest.fixture(scope="module")
def sasl_settings(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerSettings]:
    """A SASL-only broker of its own (stopped by pid afterwards); Triton from the session."""
    state_dir = tmp_path_factory.mktemp("sasl")
    settings = stack.settings.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
        }
    )
    settings = WorkerSettings.model_validate(
        {**settings.model_dump(), "kafka_sasl_password": PASSWORD}
    )
    kafka = LocalKafka(settings, StateFile(state_dir / "stack.json"))
    try:
        bootstrap = asyncio.run(kafka.start())
        tag = uuid.uuid4().hex[:8]
        settings = settings.model_copy(
            update={
                "kafka_bootstrap_servers": bootstrap,
                "app_id": f"labelstream-sasl-{tag}",
                "routes": [
                    Route(source="news.raw", model="news_topic", sink="news.labelled"),
                    Route(source="reviews.raw", model="review_sentiment", sink="reviews.labelled"),
                ],
                "triton_retry_max_s": 1.0,
            }
        )
        asyncio.run(ensure_topics(settings))
        yield settings
    finally:
        asyncio.run(kafka.stop())


def start(settings: WorkerSettings, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        cwd=log.parent,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_worker_labels_through_sasl_and_never_logs_the_password(sasl_settings, tmp_path):
    settings = sasl_settings.model_copy(update={"state_dir": tmp_path / "worker"})
    news, reviews = settings.routes
    log = tmp_path / "worker.log"
    worker = start(settings, sasl_env(settings), log)
    try:
        # The client side logs in with PLAIN; the worker (Faust, registry, admin) with SCRAM.
        client = settings.model_copy(update={"kafka_sasl_mechanism": "PLAIN"})
        security = kafka_client_kwargs(client)
        valid = {
            news.source: [
                (f"n-{i}".encode(), orjson.dumps({"id": f"n-{i}", "text": t}))
                for i, t in enumerate(texts("news", 20))
            ],
            reviews.source: [
                (f"r-{i}".encode(), orjson.dumps({"id": f"r-{i}", "text": t}))
                for i, t in enumerate(texts("reviews", 20))
            ],
        }
        bad = [(None, value) for value, _ in MALFORMED[:5]]
        bootstrap = settings.kafka_bootstrap_servers

        async def scenario():
            await produce(bootstrap, news.source, valid[news.source] + bad, security=security)
            await produce(bootstrap, reviews.source, valid[reviews.source], security=security)
            labelled = await read_topics(
                bootstrap,
                [news.sink, reviews.sink],
                expect=40,
                timeout_s=180,
                settle_s=2,
                security=security,
            )
            dead = await read_topics(
                bootstrap, [settings.deadletter_topic], expect=5, timeout_s=30, security=security
            )
            return labelled, dead

        labelled, dead = asyncio.run(scenario())
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)
    ids = sorted(orjson.loads(r.value)["id"] for r in labelled)
    assert ids == sorted(k.decode() for items in valid.values() for k, _ in items)
    reasons = sorted(orjson.loads(r.value)["error"]["type"] for r in dead)
    assert reasons == sorted(reason for _, reason in MALFORMED[:5])
    output = log.read_text()
    assert "batch" in output  # the worker did log its batches
    assert PASSWORD not in output


def test_wrong_password_is_a_clear_error_not_a_hang(sasl_settings, caplog):
    wrong = WorkerSettings.model_validate(
        {**sasl_settings.model_dump(), "kafka_sasl_password": "not-the-password"}
    )
    began = time.monotonic()
    with pytest.raises(KafkaError) as error:
        asyncio.run(
            asyncio.wait_for(
                produce(
                    wrong.kafka_bootstrap_servers,
                    "news.raw",
                    [(b"k", b"v")],
                    security=kafka_client_kwargs(wrong),
                ),
                timeout=60,
            )
        )
    assert time.monotonic() - began < 30
    # aiokafka raises "Unable to bootstrap" and logs the broker's reason as an error.
    assert "Unable to bootstrap" in str(error.value)
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text


def test_worker_with_wrong_password_exits_with_the_reason(sasl_settings, tmp_path):
    settings = sasl_settings.model_copy(update={"state_dir": tmp_path / "worker"})
    log = tmp_path / "worker.log"
    worker = start(settings, sasl_env(settings, password="not-the-password"), log)
    try:
        code = worker.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("worker hung on wrong credentials:\n" + log.read_text()[-3000:])
    finally:
        stop(worker)
    output = log.read_text()
    assert code != 0
    assert "uthentication" in output, output[-3000:]
    assert "not-the-password" not in output and PASSWORD not in output
