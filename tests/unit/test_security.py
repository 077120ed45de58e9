"""Kafka TLS/SASL and Triton TLS settings -> client options, and secrets never printed."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import structlog
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from trainer.settings import TrainerSettings
from worker.app import create_app
from worker.logging import configure_logging
from worker.security import faust_credentials, kafka_client_kwargs, triton_client_kwargs
from worker.settings import WorkerSettings

SECRET = "pw-Zq81-never-print-me"


def settings(**values) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **values)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key (what a CA bundle and a client pair look like)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    out = tmp_path_factory.mktemp("pem")
    cert, key = out / "cert.pem", out / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return {"cert": cert, "key": key}


def test_plaintext_adds_nothing():
    s = settings()
    assert kafka_client_kwargs(s) == {}
    assert faust_credentials(s) is None
    assert triton_client_kwargs(s) == {}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism):
    s = settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="worker",
        kafka_sasl_password=SECRET,
    )
    assert kafka_client_kwargs(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "worker",
        "sasl_plain_password": SECRET,
    }
    credentials = faust_credentials(s)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == mechanism
    assert credentials.username == "worker" and credentials.password == SECRET


def test_sasl_ssl_with_ca(pem):
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="worker",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=pem["cert"],
    )
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]
    credentials = faust_credentials(s)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"


def test_mutual_tls(pem):
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pem["cert"],
        kafka_ssl_certfile=pem["cert"],
        kafka_ssl_keyfile=pem["key"],
        kafka_ssl_check_hostname=False,
    )
    kwargs = kafka_client_kwargs(s)
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["ssl_context"].check_hostname is False
    credentials = faust_credentials(s)
    assert isinstance(credentials, SSLCredentials) and credentials.protocol.value == "SSL"


def test_missing_client_key_file_is_a_clear_error(tmp_path, pem):
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=pem["cert"],
        kafka_ssl_keyfile=tmp_path / "absent.pem",
    )
    with pytest.raises(FileNotFoundError):
        kafka_client_kwargs(s)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "PASSWORD"),
        ({"kafka_ssl_certfile": "c.pem"}, "go together"),
        ({"triton_private_key": "k.pem"}, "go together"),
        ({"kafka_security_protocol": "TLS"}, "SASL_SSL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
    ],
)
def test_incomplete_settings_are_refused(values, message):
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_triton_tls(pem):
    s = settings(
        triton_ssl=True,
        triton_root_certificates=pem["cert"],
        triton_private_key=pem["key"],
        triton_certificate_chain=pem["cert"],
    )
    assert triton_client_kwargs(s) == {
        "ssl": True,
        "root_certificates": str(pem["cert"]),
        "private_key": str(pem["key"]),
        "certificate_chain": str(pem["cert"]),
    }
    assert triton_client_kwargs(settings(triton_ssl=True)) == {"ssl": True}


def test_trainer_reads_the_same_fields_with_its_prefix(monkeypatch):
    monkeypatch.setenv("TRAINER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_USERNAME", "trainer")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("TRAINER_TRITON_SSL", "true")
    s = TrainerSettings(_env_file=None)
    assert kafka_client_kwargs(s)["sasl_plain_password"] == SECRET
    assert kafka_client_kwargs(s)["sasl_mechanism"] == "SCRAM-SHA-256"
    assert triton_client_kwargs(s) == {"ssl": True}
    assert SECRET not in repr(s) and SECRET not in str(s)


def test_secrets_never_printed_or_logged(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KAFKA_SSL_KEY_PASSWORD", SECRET + "-key")
    s = WorkerSettings(_env_file=None, state_dir=tmp_path, log_level="DEBUG")
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == SECRET
    configure_logging("DEBUG", "json")
    try:
        log = structlog.get_logger("test")
        log.info("settings", settings=s, dump=s.model_dump(), json=s.model_dump_json())
        logging.getLogger("faust").info("credentials %r", faust_credentials(s))
        app = create_app(s)  # what `worker run` builds before Faust starts
        logging.getLogger("faust").info("conf %r", app.conf.broker_credentials)
        for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
            assert SECRET not in text
        assert app.conf.broker_credentials.password == SECRET  # the client still gets it
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    captured = capsys.readouterr()
    assert "settings" in captured.err and "**********" in captured.err
    assert SECRET not in captured.out + captured.err
