"""Registry routing: canary shares by stable message buckets, shadow, records applied in order."""

from __future__ import annotations

import pytest

from worker.registry import Candidate, ModelEntry, RegistryReader, assign, bucket, shadow_version


def entry(**kw) -> ModelEntry:
    return ModelEntry(
        **{"model": "news", "active": "1", "event": "publish", "by": "t", "at": "now", **kw}
    )


def test_bucket_is_stable_and_uniform_enough() -> None:
    assert bucket("abc") == bucket("abc")
    values = [bucket(f"id-{i}") for i in range(10_000)]
    assert all(0 <= v < 1 for v in values)
    assert sum(v < 0.1 for v in values) == pytest.approx(1000, rel=0.1)


def test_without_entry_triton_chooses_and_without_candidate_active_serves() -> None:
    assert assign(None, ["a", "b"]) == [None, None]
    assert assign(entry(), ["a", "b"]) == ["1", "1"]


def test_canary_share_goes_to_the_candidate_by_id() -> None:
    canary = entry(candidate=Candidate(version="2", role="canary", share=0.1))
    ids = [f"id-{i}" for i in range(5000)]
    versions = assign(canary, ids)
    assert set(versions) == {"1", "2"}
    assert versions.count("2") == pytest.approx(500, rel=0.15)
    assert assign(canary, ids) == versions  # the same message always takes the same path
    assert shadow_version(canary) is None


def test_shadow_serves_the_active_version_and_names_the_shadow() -> None:
    shadow = entry(candidate=Candidate(version="2", role="shadow"))
    assert assign(shadow, ["a", "b"]) == ["1", "1"]
    assert shadow_version(shadow) == "2"


def test_reader_applies_records_and_tombstones() -> None:
    reader = RegistryReader("unused:9092", "labelstream.models")
    reader.apply(b"news", entry().model_dump_json().encode())
    reader.apply(b"news", entry(active="2", previous="1").model_dump_json().encode())
    reader.apply(b"reviews", b"not json")  # logged and ignored, never raises
    assert reader.get("news").active == "2"
    assert reader.get("reviews") is None
    reader.apply(b"news", None)
    assert reader.get("news") is None


def report(version: str, failure_rate=None, shadow=None) -> dict:
    out = {"model": {"name": "news", "version": version}}
    if failure_rate is not None:
        out["candidate_failure_rate"] = failure_rate
    if shadow is not None:
        out["shadow"] = shadow
    return out


def rollback(entry_, report_):
    from worker.registry import auto_rollback

    return auto_rollback(
        entry_, report_, max_failure_rate=0.05, min_agreement=0.8, by="worker:x", at="t1"
    )


def test_auto_rollback_removes_a_failing_canary_only() -> None:
    canary = entry(candidate=Candidate(version="2", role="canary", share=0.1))
    assert rollback(canary, report("2", failure_rate=0.01)) is None
    assert rollback(canary, report("1")) is None  # the active version's window
    rolled = rollback(canary, report("2", failure_rate=0.5))
    assert rolled.candidate is None and rolled.active == "1"
    assert (rolled.event, rolled.by) == ("auto_rollback", "worker:x")
    assert "failed 50.0%" in rolled.note
    assert rollback(entry(), report("2", failure_rate=1.0)) is None  # nothing to roll back


def test_auto_rollback_removes_a_disagreeing_shadow() -> None:
    shadow = entry(candidate=Candidate(version="3", role="shadow"))
    assert rollback(shadow, report("1", shadow={"version": "3", "agreement": 0.95})) is None
    rolled = rollback(shadow, report("1", shadow={"version": "3", "agreement": 0.4}))
    assert rolled.candidate is None and "agreed on only 40.0%" in rolled.note
    # a report about an older shadow does not remove the current one
    assert rollback(shadow, report("1", shadow={"version": "9", "agreement": 0.1})) is None


def test_a_change_states_the_revision_it_was_made_from() -> None:
    current = entry(revision=4, base=3)
    changed = current.revise(active="2", event="promote")
    assert (changed.base, changed.revision, changed.active) == (4, 5, "2")
    rolled = rollback(
        entry(revision=4, candidate=Candidate(version="2", role="canary")),
        report("2", failure_rate=0.5),
    )
    assert (rolled.base, rolled.revision) == (4, 5)


def test_a_write_based_on_a_stale_revision_is_rejected_and_kept_in_the_history() -> None:
    """A promote and an automatic rollback both read revision 1; the first on the topic wins,
    the other is rejected by every reader, and both attempts stay in the history."""
    reader = RegistryReader("unused:9092", "labelstream.models")
    read = entry(revision=1, candidate=Candidate(version="2", role="canary", share=0.1))
    reader.apply(b"news", read.model_dump_json().encode())
    promote = read.revise(active="2", previous="1", candidate=None, event="promote")
    rolled = read.revise(candidate=None, event="auto_rollback", by="worker:x")
    reader.apply(b"news", promote.model_dump_json().encode())
    reader.apply(b"news", rolled.model_dump_json().encode())
    assert reader.get("news") == promote
    assert [(d.entry.event, d.accepted) for d in reader.history] == [
        ("publish", True),
        ("promote", True),
        ("auto_rollback", False),
    ]
    assert reader.decision(rolled).accepted is False


def test_the_winner_published_again_changes_nothing_and_survives_compaction() -> None:
    read = entry(revision=1)
    winner = read.revise(active="2", event="promote")
    live = RegistryReader("unused:9092", "labelstream.models")
    for record in (read, winner, winner):  # the loser re-publishes the winner
        live.apply(b"news", record.model_dump_json().encode())
    assert live.get("news") == winner and len(live.history) == 2
    compacted = RegistryReader("unused:9092", "labelstream.models")
    compacted.apply(b"news", winner.model_dump_json().encode())  # only the last record is left
    assert compacted.get("news") == winner


def test_records_without_a_revision_are_read_and_accepted() -> None:
    """Records written before revisions existed (no `revision`, no `base`) still apply."""
    reader = RegistryReader("unused:9092", "labelstream.models")
    reader.apply(b"news", entry(revision=3).model_dump_json().encode())
    old = b'{"model": "news", "active": "7", "event": "promote", "by": "t", "at": "then"}'
    reader.apply(b"news", old)
    assert reader.get("news").active == "7" and reader.get("news").revision == 0
    reader.apply(b"news", reader.get("news").revise(active="8").model_dump_json().encode())
    assert reader.get("news").active == "8"
