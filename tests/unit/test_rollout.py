"""Roll-out steps in order: load before the registry routes to a version, unload after it stops."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

import trainer.rollout as rollout_module
from trainer.cli import parse_share
from trainer.rollout import Rollout, RolloutError


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Rollout whose Triton and Kafka are recorded, not called."""
    for version in (1, 2, 3):
        (tmp_path / "news" / str(version)).mkdir(parents=True)
    calls: list[tuple] = []
    registry: dict = {}

    def serve(model, repository, url, versions, timeout_s=120.0, tls=None, config_name=""):
        calls.append(("serve", sorted(versions)))
        return {v: ["a", "b"] for v in versions}

    async def read(bootstrap, topic, security=None):
        return dict(registry)

    async def write(bootstrap, topic, entry, security=None):
        calls.append(("write", entry.event, entry.active, entry.candidate))
        registry[entry.model] = entry

    monkeypatch.setattr(rollout_module, "serve_versions", serve)
    monkeypatch.setattr(rollout_module, "read_registry", read)
    monkeypatch.setattr(rollout_module, "write_entry", write)
    monkeypatch.setattr(rollout_module.time, "sleep", lambda s: calls.append(("sleep", s)))
    rollout = Rollout("news", tmp_path, "triton:1", "kafka:1", grace_s=3, by="me")
    return rollout, calls


def test_publish_canary_promote_rollback_order(steps) -> None:
    rollout, calls = steps
    rollout.publish(1)
    assert calls == [("serve", [1]), ("write", "publish", "1", None)]
    calls.clear()

    entry = rollout.publish(2, canary=0.1)
    assert entry.candidate.share == 0.1 and entry.labels == {"1": ["a", "b"], "2": ["a", "b"]}
    assert calls[0] == ("serve", [1, 2]) and calls[1][:3] == ("write", "canary", "1")
    assert len(calls) == 2  # nothing to unload
    calls.clear()

    entry = rollout.promote(2)
    assert (entry.active, entry.previous, entry.candidate) == ("2", "1", None)
    assert calls == [
        ("serve", [1, 2]),
        ("write", "promote", "2", None),
        ("sleep", 3),
        ("serve", [2]),
    ]
    calls.clear()

    entry = rollout.rollback()
    assert (entry.active, entry.previous) == ("1", None)
    assert calls == [
        ("serve", [1, 2]),
        ("write", "rollback", "1", None),
        ("sleep", 3),
        ("serve", [1]),
    ]
    with pytest.raises(RolloutError, match="no candidate and no previous"):
        rollout.rollback()


def test_replacing_a_shadow_keeps_it_loaded_until_the_registry_moved(steps) -> None:
    rollout, calls = steps
    rollout.publish(1)
    rollout.publish(2, shadow=True)
    calls.clear()
    rollout.publish(3, canary=0.5)
    assert calls[0] == ("serve", [1, 2, 3])  # the old shadow still loaded while workers switch
    assert calls[-1] == ("serve", [1, 3])


def test_refusals(steps) -> None:
    rollout, _ = steps
    with pytest.raises(RolloutError, match="publish one before a candidate"):
        rollout.publish(2, canary=0.1)
    with pytest.raises(RolloutError, match="not in the registry"):
        rollout.promote(2)
    rollout.publish(1)
    with pytest.raises(RolloutError, match="already the active"):
        rollout.publish(1, shadow=True)
    with pytest.raises(RolloutError, match="no version 9"):
        rollout.publish(9)


def test_parse_share() -> None:
    assert parse_share("10%") == pytest.approx(0.1)
    assert parse_share("0.25") == 0.25
    for bad in ("0%", "150%", "-1"):
        with pytest.raises(typer.BadParameter):
            parse_share(bad)


def test_each_write_states_the_revision_it_read(steps) -> None:
    rollout, _ = steps
    first = rollout.publish(1)
    second = rollout.publish(2, canary=0.1)
    assert (first.base, first.revision, second.base, second.revision) == (0, 1, 1, 2)


def test_a_step_that_lost_the_compare_and_set_fails_and_unloads_nothing(steps, monkeypatch):
    from worker.registry import StaleRevision

    rollout, calls = steps
    rollout.publish(1)
    rollout.publish(2, canary=0.1)
    calls.clear()

    async def stale(bootstrap, topic, entry, security=None):
        raise StaleRevision(entry, None)

    monkeypatch.setattr(rollout_module, "write_entry", stale)
    with pytest.raises(RolloutError, match="run the step again"):
        rollout.promote(2)
    assert calls == [("serve", [1, 2])]  # the winner may still route to version 1
