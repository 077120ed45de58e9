"""Errors by kind: transient failures are retried, any other is isolated to its message.
Proved by recording every call `isolate` makes."""

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, NotEnoughReplicasError, UnknownTopicOrPartitionError
from tritonclient.utils import InferenceServerException

from worker.failures import is_transient, isolate

FAST = {"retry_initial_s": 0.001, "retry_max_s": 0.001}


class Recorder:
    """`attempt` fails for any batch holding a poison item; records every batch it saw."""

    def __init__(self, poison: set[int], transient_first: int = 0) -> None:
        self.poison = poison
        self.calls: list[list[int]] = []
        self.transient_left = transient_first

    async def attempt(self, items):
        self.calls.append(list(items))
        if self.transient_left:
            self.transient_left -= 1
            raise ConnectionError("broker went away")
        if self.poison & set(items):
            raise ValueError(f"bug on {sorted(self.poison & set(items))}")
        return ("ok", list(items))

    @staticmethod
    def fail_one(item, exc):
        return ("failed", [item], str(exc))


async def run(recorder: Recorder, items: list[int]):
    return await isolate(items, recorder.attempt, recorder.fail_one, **FAST)


async def test_one_poison_among_eight_is_bisected_out_in_order():
    recorder = Recorder({5})
    outcomes = await run(recorder, list(range(8)))
    assert outcomes == [
        ("ok", [0, 1, 2, 3]),
        ("ok", [4]),
        ("failed", [5], "bug on [5]"),
        ("ok", [6, 7]),
    ]
    # whole, halves, quarters, then the single items of the failing quarter
    assert recorder.calls == [
        list(range(8)),
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [6, 7],
    ]


async def test_two_poisons_each_get_their_own_outcome():
    outcomes = await run(Recorder({0, 7}), list(range(8)))
    covered = [item for outcome in outcomes for item in outcome[1]]
    assert covered == list(range(8))
    assert [o[1] for o in outcomes if o[0] == "failed"] == [[0], [7]]


async def test_transient_failure_is_retried_whole_never_bisected():
    recorder = Recorder(set(), transient_first=3)
    assert await run(recorder, [1, 2, 3, 4]) == [("ok", [1, 2, 3, 4])]
    assert recorder.calls == [[1, 2, 3, 4]] * 4


async def test_a_poison_alone_fails_once():
    recorder = Recorder({9})
    assert await run(recorder, [9]) == [("failed", [9], "bug on [9]")]
    assert recorder.calls == [[9]]


async def test_cancellation_is_not_a_failure():
    async def attempt(items):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await isolate([1, 2], attempt, Recorder.fail_one, **FAST)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (InferenceServerException("unavailable"), True),
        (KafkaTimeoutError(), True),
        (NotEnoughReplicasError(), True),
        (UnknownTopicOrPartitionError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ValueError("bug"), False),
        (KeyError("x"), False),
        (TypeError("bug"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool):
    assert is_transient(exc) is transient
