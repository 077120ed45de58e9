"""Faust's commit bookkeeping, with and without the fix in `worker.faust_fixes`."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP
from intervaltree import IntervalTree

from worker import faust_fixes

TP0 = TP("news.raw", 0)


def bookkeeping(committed: int | None, acked: list[int], gaps: list[tuple[int, int]] = ()):
    """The consumer attributes `_new_offset` reads, as Faust keeps them."""
    gap = defaultdict(IntervalTree)
    for begin, end in gaps:
        gap[TP0].addi(begin, end)
    return SimpleNamespace(
        _acked=defaultdict(list, {TP0: sorted(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _gap=gap,
    )


def test_faust_alone_commits_over_the_one_offset_still_in_flight():
    # Offset 10 is committed (next to process) and still in flight; 11 and 12 are acked.
    assert faust_fixes._faust_new_offset(bookkeeping(10, [11, 12]), TP0) == 13


def test_the_fix_holds_the_commit_until_the_committed_offset_is_acked():
    assert faust_fixes.new_offset(bookkeeping(10, [11, 12]), TP0) is None
    assert faust_fixes.new_offset(bookkeeping(10, [10, 11, 12]), TP0) == 13
    assert faust_fixes.new_offset(bookkeeping(10, [10, 11, 13]), TP0) == 12


def test_offsets_kafka_never_delivers_count_as_acked():
    # 10-11 are a gap (e.g. transaction markers): 12-13 acked commit through to 14.
    assert faust_fixes.new_offset(bookkeeping(10, [12, 13], gaps=[(10, 12)]), TP0) == 14


def test_without_a_committed_offset_faust_decides():
    assert faust_fixes.new_offset(bookkeeping(None, [0, 1, 2]), TP0) == 3


def test_apply_installs_the_fix_on_faust_consumer():
    from faust.transport.consumer import Consumer

    faust_fixes.apply()
    assert Consumer._new_offset is faust_fixes.new_offset
