"""NVIDIA Triton (CPU, Python backend) run from the tritonserver binary in the PyTriton wheel.

The wheel's server is copied into the state dir once, with the Python backend stub of this
interpreter next to the backend, and started with an environment that lets the stub find the
venv (see /work/shared/notes/local-stack.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from devstack.process import Command, ManagedProcess
from devstack.state import HOST, StackError, free_ports, port_free, tail

log = structlog.get_logger(__name__)

INSTALL_HINT = "install the stack extra: `.venv/bin/pip install -e '.[stack]'` (nvidia-pytriton)"


def _pytriton_paths() -> tuple[Path, Path]:
    """The wheel's `tritonserver/` dir and its bundled shared libraries, for this interpreter."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"pytriton is not installed in {sys.executable}: {INSTALL_HINT}")
    package = Path(next(iter(spec.submodule_search_locations)))
    server, libs = package / "tritonserver", package.parent / "nvidia_pytriton.libs"
    if not (server / "bin" / "tritonserver").exists():
        raise StackError(f"{server}/bin/tritonserver is missing; reinstall: {INSTALL_HINT}")
    return server, libs


class LocalTriton(ManagedProcess):
    """One tritonserver in explicit model-control mode; ports, pid and models in the state file."""

    name = "triton"
    title = "Triton"
    # On SIGINT Triton unloads its models and stops the Python stubs.
    stop_signal = signal.SIGINT
    start_timeout = 120.0
    stop_timeout = 30.0
    poll_interval = 0.1

    def _restore(self, saved: Mapping[str, Any]) -> None:
        self.server_dir = self.dir / "server"
        self.model_repository = Path(self.settings.model_repository).resolve()
        self.http_port: int | None = saved.get("http_port")
        self.grpc_port: int | None = saved.get("grpc_port")
        self.metrics_port: int | None = saved.get("metrics_port")
        self.models: list[str] = list(saved.get("models", []))

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self._port(self.grpc_port)}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self._port(self.http_port)}"

    async def start(
        self, load_models: list[str] | None = None, timeout: float = start_timeout
    ) -> str:
        """Start (no-op if ours already runs), then load `load_models`.

        Models loaded before come back through `--load-model`, so after a restart the
        endpoints only open once they are ready and clients never see an unknown model.
        """
        await self._ensure_running(timeout)
        for model in load_models or []:
            await self.load_model(model)
        return self.grpc_url

    async def _prepare(self) -> tuple[Command, dict[str, str]]:
        if not self.model_repository.is_dir():
            raise StackError(
                f"model repository {self.model_repository} does not exist (set MODEL_REPOSITORY)"
            )
        server, libs = await asyncio.to_thread(self.install)
        self._choose_ports()
        return self._command(server), self._env(libs)

    def _ready_fields(self) -> dict[str, Any]:
        return {
            "grpc": self.grpc_url,
            "http": self.http_url,
            "pid": self.pid,
            "models": self.models,
        }

    async def healthy(self) -> bool:
        if self.http_port is None:
            return False
        return await asyncio.to_thread(self._ready)

    async def load_model(self, name: str, timeout: float = 300.0) -> None:
        """Load (or reload, picking up new versions) one model; later restarts load it too."""
        began = time.monotonic()
        await asyncio.to_thread(self._post, f"/v2/repository/models/{name}/load", timeout)
        if name not in self.models:
            self.models.append(name)
            self._save()
        log.info("triton model loaded", model=name, seconds=round(time.monotonic() - began, 2))

    def install(self) -> tuple[Path, Path]:
        """Copy the wheel's server once (re-copied when the wheel version changes)."""
        source, libs = _pytriton_paths()
        version = importlib.metadata.version("nvidia-pytriton")
        marker = self.server_dir / ".pytriton-version"
        if marker.exists() and marker.read_text() == version:
            return self.server_dir, libs
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = source / "python_backend_stubs" / python / "triton_python_backend_stub"
        if not stub.exists():
            raise StackError(f"no Triton Python backend stub for Python {python} in {source}")
        tmp = self.dir / f"server.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(
            source, tmp, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__")
        )
        shutil.copy2(stub, tmp / "backends" / "python" / stub.name)
        (tmp / ".pytriton-version").write_text(version)
        shutil.rmtree(self.server_dir, ignore_errors=True)
        tmp.rename(self.server_dir)
        log.info("triton server installed", version=version, into=str(self.server_dir))
        return self.server_dir, libs

    def _command(self, server: Path) -> list[str]:
        cmd = [
            str(server / "bin" / "tritonserver"),
            "--model-control-mode=explicit",
            f"--model-repository={self.model_repository}",
            f"--backend-directory={server / 'backends'}",
            f"--cache-directory={server / 'caches'}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--disable-auto-complete-config",
            "--backend-config=python,shm-default-byte-size=4194304",
        ]
        return cmd + [f"--load-model={model}" for model in self.models]

    @staticmethod
    def _env(libs: Path) -> dict[str, str]:
        """Base-python LIBDIR first (avoids a mismatched system libpython); venv python on PATH
        because the stub's embedded interpreter finds the venv through `python3`."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{libs}"
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def _choose_ports(self) -> None:
        """Keep recorded ports so clients reconnect to the same address after a restart."""
        if None in (self.http_port, self.grpc_port, self.metrics_port):
            self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
            self._save()
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            assert port is not None
            if not port_free(port):
                raise StackError(
                    f"Triton port {port} is in use by another process; stop it or "
                    f"delete {self.state.path} for new ports"
                )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _post(self, path: str, timeout: float) -> None:
        request = urllib.request.Request(f"{self.http_url}{path}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            try:
                detail = json.loads(body).get("error", body)
            except json.JSONDecodeError:
                detail = body
            raise StackError(
                f"Triton refused {path} ({exc.code}): {detail}\n"
                f"log {self.log_path}:\n{tail(self.log_path, 20)}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"Triton did not answer {path}: {exc}") from exc

    def _port(self, port: int | None) -> int:
        if port is None:
            raise StackError("Triton has no port yet: start it first")
        return port

    def _state_fields(self) -> dict[str, Any]:
        return {
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "models": self.models,
            "grpc_url": f"{HOST}:{self.grpc_port}",
            "http_url": f"http://{HOST}:{self.http_port}",
        }
