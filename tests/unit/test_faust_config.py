"""Faust is configured from WorkerSettings only, never from its own environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.app import create_app
from worker.settings import WorkerSettings


def test_faust_environment_variables_do_not_override_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Faust reads BROKER_URL, PRODUCER_ACKS, ... from the environment and lets them win over
    its arguments: a Celery-style BROKER_URL would silently point the worker at another broker,
    and PRODUCER_ACKS=0 would commit offsets for records the broker never stored."""
    for name, value in {
        "BROKER_URL": "kafka://elsewhere:9999",
        "PRODUCER_ACKS": "0",
        "PROCESSING_GUARANTEE": "exactly_once",
        "BROKER_COMMIT_INTERVAL": "600",
        "TOPIC_PARTITIONS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings(
        _env_file=None,
        state_dir=tmp_path,
        kafka_bootstrap_servers="10.0.0.1:9092,10.0.0.2:9092",
        topic_partitions=6,
    )
    conf = create_app(settings).conf
    assert [str(url) for url in conf.broker] == ["kafka://10.0.0.1:9092", "kafka://10.0.0.2:9092"]
    assert conf.producer_acks == -1
    assert conf.processing_guarantee.value == "at_least_once"
    assert conf.broker_commit_interval == settings.kafka_commit_interval_s
    assert conf.topic_partitions == 6
