"""The dev launcher (`devstack/`: embedded Kafka + Triton) stays out of the product: the worker
never imports it, and it has its own command line and settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack import cli as stack_cli
from devstack.settings import StackSettings
from worker.settings import WorkerSettings, get_settings

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_MODULES = ("devstack", "worker.stack")


def test_the_worker_never_imports_the_launcher():
    """In a fresh interpreter (this one has devstack loaded by the tests): the worker's app and
    command line load no launcher module, so an image without devstack/ runs them."""
    check = (
        "import sys, worker.app, worker.cli; "
        f"print(sorted(m for m in sys.modules if m.startswith({LAUNCHER_MODULES!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_launcher_only_settings_are_not_worker_settings():
    launcher = set(StackSettings.model_fields)
    assert launcher == {"kafka_version", "kafka_heap", "kafka_libs_cache"}
    assert not launcher & set(WorkerSettings.model_fields)


def test_launcher_settings_keep_their_variable_names(monkeypatch):
    monkeypatch.setenv("KAFKA_VERSION", "9.9.9")
    monkeypatch.setenv("KAFKA_HEAP", "2g")
    monkeypatch.setenv("KAFKA_LIBS_CACHE", "/tmp/jars")
    settings = StackSettings(_env_file=None)
    assert (settings.kafka_version, settings.kafka_heap) == ("9.9.9", "2g")
    assert settings.kafka_libs_cache == Path("/tmp/jars")


def test_launcher_cli_reports_a_bad_worker_setting_by_name(monkeypatch, capsys):
    monkeypatch.setenv("MAX_BATCH", "abc")
    monkeypatch.setattr("sys.argv", ["labelstream-stack", "status"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            stack_cli.main()
    finally:
        get_settings.cache_clear()
    assert exited.value.code == 2
    assert "MAX_BATCH='abc'" in capsys.readouterr().err
