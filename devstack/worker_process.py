"""Start and stop a real `worker run` process from a `WorkerSettings`.

The one way the demo, the benches and the integration tests run a worker: the settings object
they built is handed over whole, as the environment variables the worker reads, so the child
runs with exactly those settings and not with a hand-picked subset of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from worker.settings import WorkerSettings

WORKER_COMMAND = (sys.executable, "-m", "worker", "run")


def worker_env(settings: BaseSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with every field of `settings` as its
    variable; a field that is None removes its variable, so the base cannot fill it in."""
    env = dict(os.environ if base is None else base)
    prefix = settings.model_config.get("env_prefix", "")
    dumped = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        key = f"{prefix}{name}".upper()
        value = getattr(settings, name)
        if value is None:
            env.pop(key, None)
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(dumped[name], str):
            env[key] = dumped[name]
        else:
            env[key] = orjson.dumps(dumped[name]).decode()
    return env


def start_worker(
    settings: WorkerSettings, log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`worker run` with `settings`, stdout and stderr into `log_path` (truncated).

    It runs in its own session, so a Ctrl-C meant for the caller does not stop it half-way;
    stop it with `stop_worker`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            WORKER_COMMAND,
            cwd=cwd,
            env=worker_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(process: subprocess.Popen, timeout: float = 30.0) -> bool:
    """SIGTERM (the worker drains its batches in flight), SIGKILL after `timeout` seconds.

    Returns True if it had to be killed; a process that already exited is only reaped.
    """
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
