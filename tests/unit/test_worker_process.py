"""`devstack.worker_process`: the one helper that runs a real `worker run` from settings.

Real child processes (`sleep`, a tiny Python) stand in for the worker; no Kafka or Triton.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from devstack import worker_process
from devstack.worker_process import start_worker, stop_worker, worker_env
from worker.settings import Route, WorkerSettings


def _custom(tmp_path) -> WorkerSettings:
    """Settings far from the defaults, in every kind of field the worker reads."""
    return WorkerSettings(
        _env_file=None,
        kafka_bootstrap_servers="10.0.0.1:9093",
        app_id="custom-group",
        routes=[
            Route(
                source="in.raw",
                model="m",
                sink="out",
                value_format="text",
                id_from="coordinates",
                keep_input=["/a", "/b"],
            )
        ],
        max_batch=7,
        drift={"enabled": False, "window_s": 2.5},
        drop_headers=["X-Secret"],
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="me",
        kafka_sasl_password="pa$$ word",
        state_dir=tmp_path / "state",
        log_level="WARNING",
    )


def test_the_environment_rebuilds_exactly_the_settings(tmp_path, monkeypatch):
    settings = _custom(tmp_path)
    env = worker_env(settings, base={})
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert WorkerSettings(_env_file=None) == settings


def test_the_password_travels_as_its_value_not_as_stars(tmp_path):
    env = worker_env(_custom(tmp_path), base={})
    assert env["KAFKA_SASL_PASSWORD"] == "pa$$ word"


def test_settings_override_the_base_and_an_unset_setting_removes_its_variable(tmp_path):
    base = {"MAX_BATCH": "999", "KAFKA_SSL_CAFILE": "/somewhere/ca.pem", "PATH": "/bin"}
    env = worker_env(_custom(tmp_path), base=base)
    assert env["MAX_BATCH"] == "7"
    assert "KAFKA_SSL_CAFILE" not in env
    assert env["PATH"] == "/bin"


class _Prefixed(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_")

    seed: int = 1


def test_a_prefixed_settings_class_gets_prefixed_variables():
    env = worker_env(_Prefixed(_env_file=None, seed=7), base={})
    assert env == {"APP_SEED": "7"}


def test_start_worker_runs_the_command_with_the_settings_in_its_own_session(tmp_path, monkeypatch):
    script = "import os, time; print(os.environ['APP_ID'], flush=True); time.sleep(30)"
    monkeypatch.setattr(worker_process, "WORKER_COMMAND", (sys.executable, "-c", script))
    log = tmp_path / "logs" / "worker.log"
    process = start_worker(_custom(tmp_path), log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while "custom-group" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert os.getsid(process.pid) == process.pid != os.getsid(0)
    finally:
        stop_worker(process, timeout=5)
    assert process.returncode == -signal.SIGTERM


def test_stop_sends_sigterm_first():
    process = subprocess.Popen(["sleep", "30"])
    assert stop_worker(process, timeout=10) is False
    assert process.returncode == -signal.SIGTERM


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored():
    process = subprocess.Popen(
        ["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)
    )
    began = time.monotonic()
    assert stop_worker(process, timeout=0.5) is True
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 10


def test_stop_of_an_exited_process_only_reaps_it():
    process = subprocess.Popen(["true"])
    while process.poll() is None:
        time.sleep(0.01)
    assert stop_worker(process) is False
    assert process.returncode == 0


@pytest.mark.parametrize("secret", [SecretStr("x"), None])
def test_an_optional_secret_is_either_its_value_or_absent(tmp_path, secret):
    settings = _custom(tmp_path).model_copy(update={"kafka_ssl_key_password": secret})
    env = worker_env(settings, base={"KAFKA_SSL_KEY_PASSWORD": "old"})
    assert env.get("KAFKA_SSL_KEY_PASSWORD") == (secret and secret.get_secret_value())
