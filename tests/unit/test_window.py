"""Drift windows: merging samples, closing by count/time/version, replay safety, reservoir."""

from __future__ import annotations

import numpy as np
import pytest

from worker.window import (
    CONFIDENCE_BINS,
    DriftState,
    Sample,
    Window,
    WindowPolicy,
    decode_rows,
    encode_rows,
)

LABELS = ["a", "b", "c"]


def sample(version="1", predicted=(0, 1, 1), dead=0, sent_at=100.0, rows=None) -> Sample:
    n = len(predicted)
    out = Sample(
        kind="batch",
        model="m",
        sent_at=sent_at,
        version=version if predicted else None,
        labels=LABELS if predicted else [],
        predicted=list(predicted),
        confidence=[0.905] * n,
        length=[40] * n,
        dead_letters=dead,
        first_ts=sent_at - 1,
        last_ts=sent_at,
    )
    if rows is not None:
        out.embedding, out.dims = encode_rows(rows), rows.shape[1]
    return out


def test_rows_round_trip_as_float32() -> None:
    rows = np.arange(6, dtype=np.float64).reshape(3, 2) / 7
    assert np.allclose(decode_rows(encode_rows(rows), 2), rows, atol=1e-7)


def test_window_merges_counts_and_histograms() -> None:
    window = Window.open("m", 100.0)
    window.add(sample(predicted=(0, 1, 1), dead=2), sample_size=8)
    window.add(sample(predicted=(2,)), sample_size=8)
    assert window.label_counts == [1, 2, 1]
    assert (window.labelled, window.dead_letters, window.messages) == (4, 2, 6)
    assert sum(window.confidence_counts) == 4
    assert window.confidence_counts[90] == 4  # 0.905 lies in [0.90, 0.91)
    assert len(window.confidence_counts) == CONFIDENCE_BINS
    assert window.length_sum == 160
    assert window.window_id == "m:0"


def test_window_refuses_a_sample_of_another_version() -> None:
    window = Window.open("m", 0.0)
    window.add(sample(version="1"), sample_size=8)
    with pytest.raises(ValueError, match="version 2"):
        window.add(sample(version="2"), sample_size=8)


def test_reservoir_is_bounded_and_counts_every_row() -> None:
    window = Window.open("m", 0.0)
    for start in range(0, 100, 10):
        rows = np.arange(start, start + 10, dtype=np.float64).reshape(-1, 1).repeat(2, axis=1)
        window.add(sample(predicted=[0] * 10, rows=rows), sample_size=16)
    kept = window.embedding_rows()
    assert kept.shape == (16, 2)
    assert window.embedding_seen == 100
    assert len(set(kept[:, 0].tolist())) == 16  # distinct rows, drawn from all 100
    assert kept[:, 0].max() >= 16  # later rows replaced early ones


def test_state_closes_by_message_count() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=5)
    state = DriftState(model="m")
    assert (
        state.advance(sample(predicted=(0, 1, 2)), partition=0, offset=0, now=1, policy=policy)
        == []
    )
    closed = state.advance(sample(predicted=(0, 1)), partition=0, offset=1, now=2, policy=policy)
    assert [(w.messages, why) for w, why in closed] == [(5, "messages")]
    assert state.window is None


def test_state_closes_by_time_on_a_tick() -> None:
    policy = WindowPolicy(max_seconds=10, max_messages=1000)
    state = DriftState(model="m")
    state.advance(sample(sent_at=100.0), partition=0, offset=0, now=100.0, policy=policy)
    tick = Sample.tick("m", 105.0)
    assert state.advance(tick, partition=0, offset=1, now=105.0, policy=policy) == []
    closed = state.advance(Sample.tick("m", 111.0), partition=0, offset=2, now=111.0, policy=policy)
    assert [why for _, why in closed] == ["time"]
    # an empty model never closes a window
    assert (
        state.advance(Sample.tick("m", 200.0), partition=0, offset=3, now=200, policy=policy) == []
    )


def test_replayed_sample_is_not_counted_twice() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=1000)
    state = DriftState(model="m")
    state.advance(sample(), partition=2, offset=7, now=1, policy=policy)
    restored = DriftState.from_dict(state.to_dict())  # as the table changelog restores it
    restored.advance(sample(), partition=2, offset=7, now=2, policy=policy)
    restored.advance(sample(), partition=2, offset=8, now=3, policy=policy)
    assert restored.window is not None and restored.window.labelled == 6


def test_version_change_closes_the_window_and_names_the_previous_version() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=1000)
    state = DriftState(model="m")
    state.advance(sample(version="1"), partition=0, offset=0, now=1, policy=policy)
    closed = state.advance(sample(version="2"), partition=0, offset=1, now=2, policy=policy)
    assert [(w.version, why) for w, why in closed] == [("1", "version_change")]
    assert state.window is not None
    assert (state.window.version, state.window.previous_version) == ("2", "1")
    # the next window of the same version is not a change any more
    state.advance(Sample.tick("m", 0), partition=0, offset=2, now=1e10, policy=policy)
    state.advance(sample(version="2", sent_at=1e10), partition=0, offset=3, now=1e10, policy=policy)
    assert state.window is not None and state.window.previous_version is None


def test_dead_letters_only_then_labelled_stay_in_one_window() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=1000)
    state = DriftState(model="m")
    state.advance(sample(predicted=(), dead=3), partition=0, offset=0, now=1, policy=policy)
    state.advance(sample(version="4"), partition=0, offset=1, now=2, policy=policy)
    assert state.window is not None
    assert (state.window.dead_letters, state.window.labelled, state.window.version) == (3, 3, "4")


def test_a_sample_bigger_than_the_room_left_is_split_across_windows() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=4, sample_size=8)
    state = DriftState(model="m")
    rows = np.arange(14, dtype=np.float64).reshape(7, 2)
    big = sample(predicted=(0, 0, 1, 1, 2, 2, 2), dead=2, rows=rows)
    closed = state.advance(big, partition=0, offset=0, now=1, policy=policy)
    assert [(w.window_id, w.dead_letters, w.labelled) for w, _ in closed] == [
        ("m:1", 2, 2),
        ("m:2", 0, 4),
    ]
    assert closed[0][0].label_counts == [2, 0, 0]
    assert closed[1][0].label_counts == [0, 2, 2]
    assert closed[1][0].embedding_rows()[:, 0].tolist() == [4, 6, 8, 10]
    assert state.window is not None and state.window.labelled == 1
    assert state.window.window_id == "m:3"


def test_canary_traffic_has_its_own_window_and_shadow_agreement_is_counted() -> None:
    policy = WindowPolicy(max_seconds=1e9, max_messages=4)
    state = DriftState(model="m")
    active = sample(version="1", predicted=(0, 1, 1))
    active.shadow_version, active.shadow_agree, active.shadow_delta = (
        "3",
        [1, 0, -1],
        [0.1, -0.2, 0],
    )
    canary = sample(version="2", predicted=(2,))
    canary.role = "canary"
    assert state.advance(active, partition=0, offset=0, now=1, policy=policy) == []
    assert state.advance(canary, partition=0, offset=1, now=1, policy=policy) == []
    assert state.roles["canary"].window.version == "2"
    assert state.window is not None and state.window.version == "1"  # not a version change
    window = state.window
    assert (window.shadow_compared, window.shadow_agreed, window.shadow_failed) == (2, 1, 1)
    assert window.shadow_class_compared == [1, 1, 0] and window.shadow_class_agreed == [1, 0, 0]
    failures = Sample(kind="batch", model="m", sent_at=1, version="2", role="canary")
    failures.candidate_failures = 3
    closed = state.advance(failures, partition=0, offset=2, now=1, policy=policy)
    assert [(w.role, w.labelled, w.candidate_failures) for w, _ in closed] == [("canary", 1, 3)]


def test_reservoir_keeps_every_row_with_equal_chance() -> None:
    """Algorithm R: after 40 rows in batches of 10, each row is in a reservoir of 8 with chance
    8/40; over 2,000 seeds each row's share stays within 4 standard errors of 0.2."""
    kept = np.zeros(40)
    for seed in range(2000):
        window = Window.open("m", 0.0)
        for start in range(0, 40, 10):
            rows = np.arange(start, start + 10, dtype=np.float64).reshape(-1, 1)
            window._reservoir(rows, size=8, seed=seed)  # noqa: SLF001
        kept[window.embedding_rows()[:, 0].astype(int)] += 1
    share = kept / 2000
    assert np.all(np.abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 2000))
