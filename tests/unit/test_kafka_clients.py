"""Kafka clients that fail to start are still closed (no leaked connections or warnings)."""

from __future__ import annotations

import gc
import socket
import warnings

import pytest
from aiokafka.errors import KafkaConnectionError

from worker.client import produce, read_topics
from worker.registry import ModelEntry, write_entry


def closed_port() -> str:
    """A loopback address nothing listens on: connecting fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("client", ["produce", "read_topics", "write_entry"])
async def test_a_client_that_cannot_start_is_closed(client: str) -> None:
    bootstrap = closed_port()
    calls = {
        "produce": lambda: produce(bootstrap, "t", [(b"k", b"v")]),
        "read_topics": lambda: read_topics(bootstrap, ["t"], timeout_s=1),
        "write_entry": lambda: write_entry(
            bootstrap,
            "models",
            ModelEntry(
                model="m", active="1", labels={"1": ["a", "b"]}, event="publish", by="t", at="now"
            ),
        ),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KafkaConnectionError):
            await calls[client]()
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]
