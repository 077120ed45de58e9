"""Kafka with SASL and with TLS on the real path: a local broker whose only listener requires
SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), or TLS; a real worker and the session's Triton.

Right credentials: messages are labelled and dead-lettered as without security, and the password
never appears in the worker's log. Wrong credentials or an untrusted certificate: a clear error,
not a hang.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaError

from devstack.kafka import LocalKafka
from devstack.local import LocalStack
from devstack.state import StateFile
from devstack.worker_process import start_worker, stop_worker
from tests.integration.data import texts
from tests.integration.malformed import MALFORMED
from worker.client import produce, read_topics
from worker.security import kafka_client_kwargs
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

USER = "labelstream-worker"
PASSWORD = "s3cret-" + uuid.uuid4().hex


def with_password(settings: WorkerSettings, password: str) -> WorkerSettings:
    """`settings` with another SASL password (validated, so it is a SecretStr again)."""
    return WorkerSettings.model_validate({**settings.model_dump(), "kafka_sasl_password": password})


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
    settings = with_password(settings, PASSWORD)
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


def label_through(settings: WorkerSettings, client: WorkerSettings, log: Path) -> str:
    """Run a worker with `settings`, send 40 valid and 5 malformed messages as `client`, check that
    all 40 are labelled once and the 5 dead-lettered; return the worker's log."""
    news, reviews = settings.routes
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

    worker = start_worker(settings, log, cwd=log.parent)
    try:
        labelled, dead = asyncio.run(scenario())
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop_worker(worker)
    ids = sorted(orjson.loads(r.value)["id"] for r in labelled)
    assert ids == sorted(k.decode() for items in valid.values() for k, _ in items)
    reasons = sorted(orjson.loads(r.value)["error"]["type"] for r in dead)
    assert reasons == sorted(reason for _, reason in MALFORMED[:5])
    output = log.read_text()
    assert "batch" in output  # the worker did log its batches
    return output


def test_worker_labels_through_sasl_and_never_logs_the_password(sasl_settings, tmp_path):
    settings = sasl_settings.model_copy(update={"state_dir": tmp_path / "worker"})
    # The client side logs in with PLAIN; the worker (Faust, registry, admin) with SCRAM.
    client = settings.model_copy(update={"kafka_sasl_mechanism": "PLAIN"})
    output = label_through(settings, client, tmp_path / "worker.log")
    assert PASSWORD not in output


def test_wrong_password_is_a_clear_error_not_a_hang(sasl_settings, caplog):
    wrong = with_password(sasl_settings, "not-the-password")
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
    worker = start_worker(with_password(settings, "not-the-password"), log, cwd=log.parent)
    try:
        code = worker.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("worker hung on wrong credentials:\n" + log.read_text()[-3000:])
    finally:
        stop_worker(worker)
    output = log.read_text()
    assert code != 0
    assert "uthentication" in output, output[-3000:]
    assert "not-the-password" not in output and PASSWORD not in output


def make_certificates(directory: Path) -> None:
    """A throw-away CA and a broker certificate for 127.0.0.1 signed by it (PEM, openssl)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=labelstream test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "broker.pem",
        "-extfile",
        "san.ext",
    )
    key, cert = (directory / "broker.key").read_text(), (directory / "broker.pem").read_text()
    (directory / "keystore.pem").write_text(key + cert)


class TlsKafka(LocalKafka):
    """The local broker with an SSL listener (PEM keystore): a test-only variant, since the
    local stack itself serves PLAINTEXT or SASL_PLAINTEXT."""

    sasl = False

    def _listener_protocol(self) -> str:
        return "SSL"

    def _listener_props(self) -> dict[str, str]:
        tls = Path(self.settings.state_dir) / "tls"
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls / "keystore.pem"),
            "ssl.truststore.type": "PEM",  # the broker's own inter-broker connection
            "ssl.truststore.location": str(tls / "ca.pem"),
        }


@pytest.fixture(scope="module")
def tls_settings(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerSettings]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    state_dir = tmp_path_factory.mktemp("tls")
    (state_dir / "tls").mkdir()
    make_certificates(state_dir / "tls")
    settings = stack.settings.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": state_dir / "tls" / "ca.pem",
        }
    )
    kafka = TlsKafka(settings, StateFile(state_dir / "stack.json"))
    try:
        bootstrap = asyncio.run(kafka.start())
        settings = settings.model_copy(
            update={
                "kafka_bootstrap_servers": bootstrap,
                "app_id": f"labelstream-tls-{uuid.uuid4().hex[:8]}",
                "triton_retry_max_s": 1.0,
            }
        )
        asyncio.run(ensure_topics(settings))
        yield settings
    finally:
        asyncio.run(kafka.stop())


@pytest.mark.chaos
def test_worker_labels_over_tls(tls_settings, tmp_path):
    settings = tls_settings.model_copy(update={"state_dir": tmp_path / "worker"})
    label_through(settings, settings, tmp_path / "worker.log")


@pytest.mark.chaos
def test_untrusted_broker_certificate_fails_fast(tls_settings, tmp_path, caplog):
    """A client that does not trust the broker's CA (system roots only) refuses to connect."""
    untrusted = tls_settings.model_copy(update={"kafka_ssl_cafile": None})
    began = time.monotonic()
    with pytest.raises(KafkaError):
        asyncio.run(
            asyncio.wait_for(
                produce(
                    untrusted.kafka_bootstrap_servers,
                    "news.raw",
                    [(b"k", b"v")],
                    security=kafka_client_kwargs(untrusted),
                ),
                timeout=60,
            )
        )
    assert time.monotonic() - began < 30
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text[-2000:]
