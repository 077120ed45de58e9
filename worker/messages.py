"""The raw Kafka record as the pipeline sees it, independent of Faust."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Kafka record timestamp, seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to publish: a labelled result or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes
