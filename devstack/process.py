"""The lifecycle both local services share: spawn, wait until healthy, stop, restart.

A subclass says what differs (name, stop signal, timeouts, how to build the command, what
"healthy" means, which extra fields it keeps in the state file); pid and start time are
recorded here so another process (`labelstream-stack down`) can stop what this one started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import structlog

from devstack.state import (
    StackError,
    StateFile,
    astop_pid,
    pid_alive,
    proc_start_time,
    spawn,
    tail,
)
from worker.settings import WorkerSettings

Command = Sequence[str | os.PathLike[str]]


class ManagedProcess(ABC):
    """One service run as a child process, with its pid and settings in a state-file section."""

    name: ClassVar[str]
    """State-file section, directory under the state dir, log file stem and log event prefix."""
    title: ClassVar[str]
    """How error messages name the service."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float]
    stop_timeout: ClassVar[float]
    poll_interval: ClassVar[float]
    """Seconds between health checks while waiting for start-up."""

    def __init__(self, settings: WorkerSettings, state: StateFile) -> None:
        self.settings = settings
        self.state = state
        self.dir = (Path(settings.state_dir) / self.name).resolve()
        self.log_path = self.dir / f"{self.name}.log"
        # Events keep the service module's logger name, as before the lifecycle moved here.
        self._log = structlog.get_logger(type(self).__module__)
        saved = state.section(self.name)
        self.pid: int | None = saved.get("pid")
        self.start_time: int | None = saved.get("start_time")
        self._restore(saved)

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)

    @abstractmethod
    async def start(self, *, timeout: float) -> str:
        """Start (no-op if ours already runs) and return the client address."""

    @abstractmethod
    async def healthy(self) -> bool:
        """True when clients can use the service."""

    async def stop(self, timeout: float | None = None) -> None:
        """Send `stop_signal`, SIGKILL after `timeout` (default `stop_timeout`)."""
        if timeout is None:
            timeout = self.stop_timeout
        if self.alive():
            began = time.monotonic()
            killed = await astop_pid(
                self.pid, self.start_time, sig=self.stop_signal, timeout=timeout
            )
            self._log.info(
                f"{self.name} stopped",
                pid=self.pid,
                killed=killed,
                seconds=round(time.monotonic() - began, 2),
            )
        self.pid = self.start_time = None
        self._save()

    async def restart(self, timeout: float | None = None) -> str:
        """Stop and start again; the recorded ports and data are reused."""
        await self.stop()
        return await self.start(timeout=self.start_timeout if timeout is None else timeout)

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(
                    f"{self.title} exited during start-up; log {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            if await self.healthy():
                return
            await asyncio.sleep(self.poll_interval)
        raise StackError(
            f"{self.title} not ready after {timeout:.0f}s; log {self.log_path}:\n"
            f"{tail(self.log_path)}"
        )

    async def _ensure_running(self, timeout: float) -> None:
        """Wait for our process if it runs, else prepare and spawn a new one."""
        if self.alive():
            await self.wait_ready(timeout)
            return
        cmd, env = await self._prepare()
        began = time.monotonic()
        proc = spawn(cmd, self.log_path, env=env, cwd=self.dir)
        self.pid, self.start_time = proc.pid, proc_start_time(proc.pid)
        self._save()
        await self.wait_ready(timeout)
        self._log.info(
            f"{self.name} ready",
            **self._ready_fields(),
            seconds=round(time.monotonic() - began, 2),
        )

    @abstractmethod
    async def _prepare(self) -> tuple[Command, Mapping[str, str] | None]:
        """Install, choose ports and write config; return the command and its environment."""

    @abstractmethod
    def _ready_fields(self) -> dict[str, Any]:
        """Fields of the "ready" log event (addresses, pid, ...) in the order they are shown."""

    @abstractmethod
    def _restore(self, saved: Mapping[str, Any]) -> None:
        """Set the service's own paths and read its fields (ports, models) from `saved`."""

    @abstractmethod
    def _state_fields(self) -> dict[str, Any]:
        """The service's own fields for its state section, besides pid, start time and log."""

    def _save(self) -> None:
        self.state.update(
            self.name,
            pid=self.pid,
            start_time=self.start_time,
            log=str(self.log_path),
            **self._state_fields(),
        )
