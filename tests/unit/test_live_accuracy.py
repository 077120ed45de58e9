"""Live accuracy from people's corrections: feedback samples add up per version in the model's
drift state and are reported, with a Wilson interval and a confusion matrix, with the next window
that closes. Expected values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.drift import Thresholds
from worker.drift_flow import DriftMonitor
from worker.drift_report import feedback_section, wilson_interval
from worker.references import ReferenceStore
from worker.window import DriftState, Sample, WindowPolicy

LABELS = ["negative", "positive"]


def corrections(version: str, pairs: list[list[int]]) -> Sample:
    return Sample(
        kind="feedback", model="reviews", sent_at=1.0, version=version, labels=LABELS,
        feedback=pairs,
    )  # fmt: skip


def test_wilson_interval_of_8_in_10():
    # p = 0.8, z² = 3.841459: centre = (0.8 + 0.192073) / 1.384146 = 0.716739,
    # half = 1.959964 × sqrt(0.016 + 0.0096036) / 1.384146 = 0.226577 (tables: 0.4902-0.9433)
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490162, abs=2e-6), pytest.approx(0.943316, abs=2e-6))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(5, 5)[1] == 1.0


def test_corrections_add_up_per_version_and_are_skipped_when_replayed():
    state = DriftState(model="reviews")
    policy = WindowPolicy()
    # version 3 said negative twice (once right), positive once (wrong); version 4 once right
    state.advance(corrections("3", [[0, 0], [0, 1]]), partition=0, offset=1, now=2, policy=policy)
    state.advance(corrections("3", [[1, 0]]), partition=0, offset=2, now=2, policy=policy)
    state.advance(corrections("3", [[1, 0]]), partition=0, offset=2, now=2, policy=policy)
    state.advance(corrections("4", [[1, 1]]), partition=1, offset=1, now=2, policy=policy)
    assert state.feedback["3"]["confusion"] == [[1, 1], [1, 0]]
    assert state.feedback["4"]["confusion"] == [[0, 0], [0, 1]]
    assert state.window is None, "corrections count no message and open no window"
    restored = DriftState.from_dict(state.to_dict())
    assert restored.take_feedback() == state.feedback and restored.feedback == {}


def test_the_section_gives_accuracy_interval_and_confusion_per_version():
    section = feedback_section({"3": {"labels": LABELS, "confusion": [[1, 1], [1, 0]]}})
    assert section["3"]["corrections"] == 3 and section["3"]["agreed"] == 1
    assert section["3"]["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    low, high = wilson_interval(1, 3)
    assert section["3"]["ci95"] == [pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6)]
    assert section["3"]["confusion"] == [[1, 1], [1, 0]]


def test_pending_corrections_ride_on_the_next_report_once(tmp_path: Path):
    monitor = DriftMonitor(ReferenceStore(tmp_path), WindowPolicy(max_messages=2), Thresholds())
    state, reports = monitor.apply(
        None, corrections("3", [[0, 0], [1, 0]]), partition=0, offset=1, now=1.0
    )
    assert reports == []
    batch = Sample(
        kind="batch", model="reviews", sent_at=1.0, version="3", labels=LABELS,
        predicted=[0, 1], confidence=[0.9, 0.8], length=[10, 20],
    )  # fmt: skip
    state, reports = monitor.apply(state, batch, partition=0, offset=2, now=2.0)
    assert len(reports) == 1
    assert reports[0]["feedback"]["3"]["corrections"] == 2
    assert reports[0]["feedback"]["3"]["accuracy"] == 0.5
    batch.predicted = [0, 0]
    state, reports = monitor.apply(state, batch, partition=0, offset=3, now=3.0)
    assert "feedback" not in reports[0], "reported once"


def test_a_correction_joined_again_after_a_crash_is_counted_once():
    state, policy = DriftState(model="reviews"), WindowPolicy()
    first = corrections("3", [[0, 1]])
    first.feedback_at = [2, 40]  # feedback topic partition 2, offset 40
    again = corrections("3", [[0, 1]])
    again.feedback_at = [2, 40]  # the join replayed it: a new sample, the same feedback record
    later = corrections("3", [[1, 1]])
    later.feedback_at = [2, 41]
    for offset, sample in enumerate((first, again, later)):
        state.advance(sample, partition=0, offset=offset, now=2, policy=policy)
    assert state.feedback["3"]["confusion"] == [[0, 1], [0, 1]]
