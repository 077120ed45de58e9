"""The raw Kafka record as the pipeline sees it, independent of Faust."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Headers = tuple[tuple[str, bytes], ...]
"""Kafka record headers in their order; a key may repeat."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Kafka record timestamp, seconds since the epoch."""
    headers: Headers = ()

    @classmethod
    def of(cls, message: Any) -> RawMessage:
        """The pipeline's view of a consumed record (a Faust `Message`)."""
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            timestamp=message.timestamp,
            headers=tuple(message.headers or ()),
        )


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to publish: a labelled result or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    origin: RawMessage | None = field(default=None, compare=False, repr=False)
    """The input it answers, so a record Kafka refuses can become that input's dead letter."""
