"""Process and state-file primitives shared by the local Kafka and Triton services.

The state file lets `labelstream-stack down` (another process) find and stop what `up` started.
A pid is stored with the process start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"


class StackError(RuntimeError):
    """A local service could not be installed, started or reached; the message says why."""


class StateFile:
    """A JSON file with one section per service (pid, start time, ports, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise StackError(f"state file {self.path} is corrupt: {exc}; delete it") from exc

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.load().get(name, {}))

    def update(self, name: str, **values: Any) -> dict[str, Any]:
        """Merge `values` into one section; locked so two processes never lose an update."""
        with self._locked():
            data = self.load()
            data.setdefault(name, {}).update(values)
            self._write(data)
            return dict(data[name])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, data: Mapping[str, Any]) -> None:
        """Write to a temp file and rename, so a reader never sees half a file."""
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct free TCP ports; sockets stay open until all are chosen so none repeats."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def port_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on `port` (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on `port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc), None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True when `pid` runs and, if `start_time` is given, is still the process we started."""
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):
        return False
    return start_time is None or proc_start_time(pid) == start_time


def stop_pid(
    pid: int | None,
    start_time: int | None = None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 30.0,
) -> bool:
    """Send `sig`, wait up to `timeout`, then SIGKILL the whole process group.

    Returns True if the process had to be killed. Already-dead pids are fine.
    """
    if not pid_alive(pid, start_time):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return False
        time.sleep(0.05)
    log.warning("process did not stop, killing it", pid=pid, signal=sig.name, timeout=timeout)
    # Children were started with start_new_session=True, so the group id equals the pid;
    # killing the group also takes helper processes (e.g. Triton's Python stubs).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    return True


async def astop_pid(
    pid: int | None,
    start_time: int | None = None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 30.0,
) -> bool:
    """`stop_pid` without blocking the event loop (the worker may share it)."""
    return await asyncio.to_thread(stop_pid, pid, start_time, sig, timeout)


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service in its own session (survives the terminal), output appended to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start =====\n".encode())
        out.flush()
        return subprocess.Popen(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
