import asyncio

import pytest

from worker.batching import Dispatcher, chunks, halves, prepare_batch
from worker.messages import RawMessage
from worker.validation import Rejection, validate


def raws(values: list[bytes]) -> list[RawMessage]:
    return [RawMessage("t", 0, i, None, v, 0.0) for i, v in enumerate(values)]


def test_prepare_batch_keeps_positions():
    batch = prepare_batch(
        raws([b'{"id":"a","text":"x"}', b"bad", b'{"id":"b","text":"y"}']),
        lambda r: validate(r, max_bytes=100, max_text_chars=100),
    )
    assert [i for i, _, _ in batch.valid] == [0, 2]
    assert [(i, rej.type) for i, _, rej in batch.rejected] == [(1, "invalid_json")]
    assert batch.size == 3
    assert all(isinstance(rej, Rejection) for _, _, rej in batch.rejected)


def test_chunks_respect_size():
    assert [list(c) for c in chunks(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []
    with pytest.raises(ValueError):
        list(chunks([1], 0))


def test_halves():
    assert halves([1, 2, 3]) == ([1], [2, 3])


class Recorder:
    """process/finish for a Dispatcher that records what happened, in which order."""

    def __init__(self, delays: dict[int, float] | None = None) -> None:
        self.delays = delays or {}
        self.batches: list[list[int]] = []
        self.finished: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def process(self, batch: list[int]) -> int:
        self.batches.append(list(batch))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delays.get(batch[0], 0.01))
        finally:
            self.running -= 1
        return sum(batch)

    async def finish(self, batch: list[int], total: int) -> None:
        assert total == sum(batch)
        self.finished.append(list(batch))


def dispatcher(rec: Recorder, max_batch: int = 4, in_flight: int = 2) -> Dispatcher:
    return Dispatcher(
        max_batch=max_batch, in_flight=in_flight, process=rec.process, finish=rec.finish
    )


async def test_batches_finish_in_the_order_they_left_even_when_later_ones_are_faster():
    rec = Recorder(delays={0: 0.2, 1: 0.01})  # the first batch is slow, the second fast
    async with dispatcher(rec, max_batch=1, in_flight=2) as d:
        await d.add([0])
        await d.add([1])
        await d.drain()
    assert rec.batches == [[0], [1]]
    assert rec.most_running == 2, "both batches were in flight at once"
    assert rec.finished == [[0], [1]]


async def test_a_lone_message_leaves_at_once_and_a_backlog_leaves_in_full_batches():
    rec = Recorder()
    async with dispatcher(rec, max_batch=4, in_flight=1) as d:
        await d.add([0])
        await asyncio.sleep(0.001)
        assert rec.batches == [[0]], "no timer: an idle dispatcher sends a lone message now"
        await d.add(list(range(1, 4)))
        await d.add(list(range(4, 11)))  # arrives while the first batch is in flight
        await d.drain()
    assert rec.batches[0] == [0]
    assert [len(b) for b in rec.batches[1:]] == [4, 4, 2]
    assert [i for b in rec.finished for i in b] == list(range(11))


async def test_in_flight_is_bounded_and_add_blocks_while_a_full_batch_waits():
    rec = Recorder(delays={i: 0.05 for i in range(100)})
    async with dispatcher(rec, max_batch=2, in_flight=2) as d:
        for i in range(0, 20, 2):
            await d.add([i, i + 1])
            assert d.unfinished <= 2 * 2 + 2 + 2, "in flight + one waiting batch + this add"
        await d.drain()
    assert rec.most_running == 2
    assert [i for b in rec.finished for i in b] == list(range(20))


async def test_a_failing_batch_is_raised_to_the_caller_and_never_finished():
    async def boom(batch: list[int]) -> int:
        raise ValueError("bug")

    finished: list = []

    async def finish(batch: list[int], result: int) -> None:
        finished.append(batch)

    async with Dispatcher(max_batch=2, in_flight=1, process=boom, finish=finish) as d:
        await d.add([1])
        with pytest.raises(RuntimeError, match="dispatcher failed"):
            await d.drain()
        with pytest.raises(RuntimeError):
            await d.add([2])
    assert finished == []


async def test_close_cancels_batches_in_flight_without_finishing_them():
    rec = Recorder(delays={0: 10.0})
    async with dispatcher(rec, max_batch=1, in_flight=1) as d:
        await d.add([0])
        await asyncio.sleep(0.01)
    assert rec.batches == [[0]]
    assert rec.finished == [] and rec.running == 0


async def test_a_keyed_batch_holds_one_key_in_order_and_each_key_keeps_its_order():
    rec = Recorder()
    keyed = Dispatcher(
        max_batch=3, in_flight=1, process=rec.process, finish=rec.finish, key=lambda i: i % 2
    )
    async with keyed as d:
        await d.add(list(range(10)))  # 0..9 while nothing is in flight: odd and even mixed
        await d.drain()
    for batch in rec.batches:
        assert len({i % 2 for i in batch}) == 1, batch
        assert len(batch) <= 3
    for parity in (0, 1):
        order = [i for b in rec.finished for i in b if i % 2 == parity]
        assert order == sorted(order)
    assert sorted(i for b in rec.finished for i in b) == list(range(10))


async def test_keyed_batches_stay_full_while_several_keys_wait():
    rec = Recorder(delays={i: 0.02 for i in range(100)})
    keyed = Dispatcher(
        max_batch=4, in_flight=1, process=rec.process, finish=rec.finish, key=lambda i: i % 4
    )
    async with keyed as d:
        await d.add([100])
        await asyncio.sleep(0.001)  # in flight: the rest piles up behind it
        for start in range(0, 16, 4):  # as a consumer delivers them: four keys, four of each
            await d.add(list(range(start, start + 4)))
        await d.drain()
    assert [len(b) for b in rec.batches[1:]] == [4, 4, 4, 4]
