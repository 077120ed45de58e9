"""Kafka TLS/SASL and Triton TLS settings, and the one place that turns them into client options.

Both packages mix these fields into their settings (the trainer with its `TRAINER_` prefix), so
every Kafka client (Faust, the aiokafka producers and consumers, the topic admin, the registry
reader) and every Triton client is configured from the same fields by the same functions.
Passwords are `SecretStr`: they print as `**********` in reprs, logs and dumps.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT
from pydantic import BaseModel, Field, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(BaseModel):
    """How clients authenticate to Kafka and encrypt the connection (default: neither)."""

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates (SSL, SASL_SSL)."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM).")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client key, if encrypted (never logged)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Verify that the broker certificate names the host."
    )

    # Validator names are unique across the mixins: same-named ones would shadow each other.
    @model_validator(mode="after")
    def _kafka_complete(self) -> KafkaSecurity:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")


class TritonTLS(BaseModel):
    """TLS for the Triton gRPC channel (default: plaintext)."""

    triton_ssl: bool = Field(False, description="Use TLS for the Triton gRPC channel.")
    triton_root_certificates: Path | None = Field(
        None, description="CA bundle (PEM) for Triton's certificate; default: system roots."
    )
    triton_private_key: Path | None = Field(
        None, description="Client private key (PEM) for mutual TLS with Triton."
    )
    triton_certificate_chain: Path | None = Field(
        None, description="Client certificate chain (PEM) for mutual TLS with Triton."
    )

    @model_validator(mode="after")
    def _triton_complete(self) -> TritonTLS:
        if (self.triton_private_key is None) != (self.triton_certificate_chain is None):
            raise ValueError("TRITON_PRIVATE_KEY and TRITON_CERTIFICATE_CHAIN go together")
        return self


def kafka_ssl_context(settings: KafkaSecurity) -> ssl.SSLContext | None:
    """The client TLS context, or None when the protocol is not SSL / SASL_SSL."""
    if not settings.kafka_uses_tls:
        return None
    password = settings.kafka_ssl_key_password
    context = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        password=password.get_secret_value() if password else None,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_client_kwargs(settings: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin).

    Empty for PLAINTEXT, so callers that pass nothing keep aiokafka's defaults.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by the model validator
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return kwargs


def faust_credentials(settings: KafkaSecurity) -> CredentialsT | None:
    """Faust's `broker_credentials` for the same settings (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # checked by the model validator
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,  # SASL_SSL when set, SASL_PLAINTEXT otherwise
    )


def triton_client_kwargs(settings: TritonTLS) -> dict[str, Any]:
    """Keyword arguments for tritonclient's gRPC clients (sync and asyncio).

    tritonclient reads the PEM files itself; paths are passed as strings.
    """
    if not settings.triton_ssl:
        return {}
    files = {
        "root_certificates": settings.triton_root_certificates,
        "private_key": settings.triton_private_key,
        "certificate_chain": settings.triton_certificate_chain,
    }
    return {"ssl": True, **{k: str(v) for k, v in files.items() if v is not None}}
