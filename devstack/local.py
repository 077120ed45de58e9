"""The embedded local stack: Kafka + Triton on loopback, topics created, models loaded.

Everything a later process needs (`down`, `status`) is in `<state_dir>/stack.json`.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from devstack.kafka import LocalKafka
from devstack.settings import StackSettings
from devstack.state import StateFile
from devstack.triton import LocalTriton
from worker.settings import WorkerSettings, get_settings
from worker.topics import ensure_topics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StackAddresses:
    """Where clients reach the stack, as the environment variables the worker reads."""

    kafka_bootstrap_servers: str
    triton_url: str
    triton_http_url: str

    def env(self) -> dict[str, str]:
        return {key.upper(): value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    alive: bool
    healthy: bool
    address: str | None
    log: str


class LocalStack:
    """Start/stop both services; usable as `async with LocalStack(settings) as stack:`.

    `settings` are the worker's (state dir, model repository, topics, Kafka security): the
    stack serves what a worker with them expects. `stack_settings` say how to run the broker.
    """

    def __init__(
        self, settings: WorkerSettings | None = None, stack_settings: StackSettings | None = None
    ) -> None:
        self.base_settings = settings or get_settings()
        self.state = StateFile(Path(self.base_settings.state_dir).resolve() / "stack.json")
        self.kafka = LocalKafka(self.base_settings, self.state, stack_settings)
        self.triton = LocalTriton(self.base_settings, self.state)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def triton_grpc_url(self) -> str:
        return self.triton.grpc_url

    @property
    def triton_http_url(self) -> str:
        return self.triton.http_url

    @property
    def addresses(self) -> StackAddresses:
        return StackAddresses(self.bootstrap_servers, self.triton_grpc_url, self.triton_http_url)

    @property
    def settings(self) -> WorkerSettings:
        """The base settings pointed at this stack (bootstrap servers and Triton URL)."""
        return self.base_settings.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap_servers,
                "triton_url": self.triton_grpc_url,
            }
        )

    async def up(self, load_models: list[str] | None = None) -> StackAddresses:
        """Start what is not running (same ports as last time), create topics, load models.

        On failure, whatever this call started is stopped again.
        """
        started = [s for s in (self.kafka, self.triton) if not s.alive()]
        try:
            await _start_both(self.kafka, self.triton)
            await ensure_topics(self.settings)
            for model in load_models or []:
                await self.triton.load_model(model)
        except BaseException:
            await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)
            raise
        log.info("local stack up", **self.addresses.env())
        return self.addresses

    async def down(self) -> None:
        """Stop both by the pids in the state file (ports are kept for the next `up`)."""
        await asyncio.gather(self.triton.stop(), self.kafka.stop())

    async def status(self) -> list[ServiceStatus]:
        kafka_ok, triton_ok = await asyncio.gather(self.kafka.healthy(), self.triton.healthy())
        return [
            ServiceStatus(
                "kafka",
                self.kafka.pid,
                self.kafka.alive(),
                kafka_ok,
                _maybe(lambda: self.kafka.bootstrap_servers),
                str(self.kafka.log_path),
            ),
            ServiceStatus(
                "triton",
                self.triton.pid,
                self.triton.alive(),
                triton_ok,
                _maybe(lambda: self.triton.grpc_url),
                str(self.triton.log_path),
            ),
        ]

    async def __aenter__(self) -> LocalStack:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()


async def _start_both(kafka: LocalKafka, triton: LocalTriton) -> None:
    """Start in parallel; if one fails the other is cancelled, and the first error is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(kafka.start())
            group.create_task(triton.start())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None


def _maybe(get: Any) -> str | None:
    try:
        return get()
    except Exception:
        return None
