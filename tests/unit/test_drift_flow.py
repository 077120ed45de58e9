"""The drift agent's body without Faust, and drift settings as one nested model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from worker.drift import Thresholds
from worker.drift_flow import DriftFlow, DriftMonitor
from worker.references import ReferenceStore
from worker.settings import DriftSettings, WorkerSettings, describe_settings_error
from worker.window import Sample


def report(model: str, window: int) -> dict:
    return {
        "model": {"name": model, "version": "1"},
        "window": {"id": f"{model}:1:{window}"},
        "messages": 10,
        "status": "ok",
        "reasons": [],
    }


class Monitor:
    """Counts samples per model in the table value; a tick closes the model's window."""

    def apply(self, state, sample, *, partition, offset, now):
        count = (state or {"count": 0})["count"] + (sample.kind == "batch")
        closed = [report(sample.model, offset)] if sample.kind == "tick" else []
        return {"count": 0 if closed else count}, closed


class Guard:
    def __init__(self) -> None:
        self.checked: list[dict] = []

    async def check(self, report: dict) -> bool:
        self.checked.append(report)
        return False


def delivered(sample: Sample, offset: int) -> SimpleNamespace:
    return SimpleNamespace(value=orjson.dumps(sample.to_dict()), partition=2, offset=offset)


async def test_a_closed_window_is_published_then_checked_and_the_table_follows():
    sent: list = []

    async def send_all(records):
        sent.extend(records)
        return [None] * len(records)

    table: dict = {}
    guard = Guard()
    flow = DriftFlow(Monitor(), table, send_all, "drift.reports", guard, clock=lambda: 5.0)
    batch = Sample(kind="batch", model="news", sent_at=1.0)
    assert await flow.take(delivered(batch, 7)) == []
    assert await flow.take(delivered(batch, 8)) == []
    assert table == {"news": {"count": 2}} and sent == []
    closed = await flow.take(delivered(Sample.tick("news", 2.0), 9))
    assert [r["window"]["id"] for r in closed] == ["news:1:9"]
    assert [(r.topic, r.key, orjson.loads(r.value)) for r in sent] == [
        ("drift.reports", b"news", closed[0])
    ]
    assert guard.checked == closed
    assert table == {"news": {"count": 0}}


def test_the_monitor_takes_every_threshold_from_the_drift_settings(tmp_path: Path):
    """Every field differs from its default and from the others, so a field mapped to the
    wrong place fails."""
    thresholds = {
        "psi_warn": 0.11,
        "psi_drift": 0.31,
        "ks_warn": 0.12,
        "ks_drift": 0.32,
        "mmd_warn": 0.013,
        "mmd_drift": 0.033,
        "deadletter_warn": 0.14,
        "deadletter_drift": 0.34,
        "alpha": 0.01,
    }
    drift = DriftSettings(
        window_s=12.0,
        window_messages=7,
        embedding_sample=9,
        permutations=200,
        confidence_threshold=0.6,
        **thresholds,
    )
    monitor = DriftMonitor.from_settings(ReferenceStore(tmp_path), drift)
    policy = monitor.policy
    assert (policy.max_seconds, policy.max_messages, policy.sample_size) == (12.0, 7, 9)
    assert monitor.thresholds == Thresholds(**thresholds)
    assert (monitor.permutations, monitor.confidence_threshold) == (200, 0.6)


def test_drift_variables_keep_their_names(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFT_WINDOW_S", "12.5")
    monkeypatch.setenv("DRIFT_WINDOW_MESSAGES", "40")
    monkeypatch.setenv("DRIFT_ENABLED", "false")
    monkeypatch.setenv("DRIFT_TOPIC", "my.drift")
    monkeypatch.setenv("DRIFT_PSI_WARN", "0.3")
    drift = WorkerSettings(_env_file=None).drift
    assert (drift.window_s, drift.window_messages, drift.enabled) == (12.5, 40, False)
    assert (drift.topic, drift.psi_warn, drift.tick_s) == ("my.drift", 0.3, 5.0)


def test_a_bad_drift_variable_is_named_as_it_is_set(monkeypatch: pytest.MonkeyPatch):
    from pydantic import ValidationError

    monkeypatch.setenv("DRIFT_WINDOW_MESSAGES", "many")
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(_env_file=None)
    assert describe_settings_error(caught.value).startswith("DRIFT_WINDOW_MESSAGES='many'")


def test_an_unknown_drift_variable_is_ignored_like_any_other(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFT_SOMETHING_ELSE", "x")
    assert WorkerSettings(_env_file=None).drift == DriftSettings()
