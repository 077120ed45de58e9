"""Micro-batch policy: when a batch leaves, what of it goes to Triton, in how many requests.

`Dispatcher` forms batches from the consumed events and keeps several in flight; the helpers
below split one batch into valid texts and rejects and size its requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from worker.messages import RawMessage
from worker.schemas import InputMessage
from worker.validation import Rejection

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")


@dataclass(slots=True)
class PreparedBatch:
    """Valid and rejected messages of one consumed batch, each with its position in it."""

    valid: list[tuple[int, RawMessage, InputMessage]] = field(default_factory=list)
    rejected: list[tuple[int, RawMessage, Rejection]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.valid) + len(self.rejected)


def prepare_batch(
    raws: Sequence[RawMessage], validate: Callable[[RawMessage], InputMessage | Rejection]
) -> PreparedBatch:
    batch = PreparedBatch()
    for index, raw in enumerate(raws):
        outcome = validate(raw)
        if isinstance(outcome, Rejection):
            batch.rejected.append((index, raw, outcome))
        else:
            batch.valid.append((index, raw, outcome))
    return batch


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items (Triton's max batch size bounds a request)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def halves(items: Sequence[T]) -> tuple[Sequence[T], Sequence[T]]:
    """Split for bisecting a batch that Triton rejected, to isolate the offending message."""
    middle = len(items) // 2
    return items[:middle], items[middle:]


class Dispatcher(Generic[E, R]):
    """Continuous micro-batching: up to `in_flight` batches at once, finished in arrival order.

    Items wait in one queue. A batch leaves as soon as one of the `in_flight` slots is free, with
    up to `max_batch` of the waiting items: at low load a message waits for nobody, and while
    every slot is busy arrivals pile up, so the batch size follows the arrival rate times
    Triton's latency without a tuned timer. `process` runs concurrently for the batches in
    flight; `finish` (publish, then acknowledge) runs strictly in the order batches left, so on
    every partition the acknowledged offsets are always a prefix of the delivered ones (Faust's
    commit bookkeeping never sees a gap). A slot is freed only after its batch finished.
    `add` blocks once `max_batch` items are waiting (backpressure: memory stays bounded).

    With a `key` (exactly-once: the input partition, whose transaction a batch is), a batch
    holds only items of one key: the oldest waiting item's, and the waiting items of that key
    after it, in order. Up to `max_batch` items per waiting key may then wait, so batches stay
    full while several partitions deliver at once.
    """

    def __init__(
        self,
        *,
        max_batch: int,
        in_flight: int,
        process: Callable[[list[E]], Awaitable[R]],
        finish: Callable[[list[E], R], Awaitable[None]],
        key: Callable[[E], Hashable] | None = None,
    ) -> None:
        if max_batch < 1 or in_flight < 1:
            raise ValueError("max_batch and in_flight must be >= 1")
        self.max_batch = max_batch
        self._key = key
        self._process = process
        self._finish = finish
        self._waiting: list[E] = []
        self._slots = asyncio.Semaphore(in_flight)
        self._order: asyncio.Queue[tuple[list[E], asyncio.Task[R]]] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._unfinished = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None

    async def __aenter__(self) -> Dispatcher[E, R]:
        self._tasks = [
            asyncio.create_task(self._guard(self._dispatch())),
            asyncio.create_task(self._guard(self._complete())),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def unfinished(self) -> int:
        """Items added and not finished yet (waiting or in flight)."""
        return self._unfinished

    async def add(self, items: Sequence[E]) -> None:
        """Queue items; waits while a full batch is already waiting."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._error is not None or len(self._waiting) < self._room()
            )
            self._raise_if_failed()
            self._waiting.extend(items)
            self._unfinished += len(items)
            self._changed.notify_all()

    async def drain(self) -> None:
        """Wait until everything added so far has finished."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._error is not None or not self._unfinished)
            self._raise_if_failed()

    async def close(self) -> None:
        """Stop; batches still in flight are cancelled, and never finished (nor acknowledged)."""
        for task in self._tasks:
            task.cancel()
        while not self._order.empty():
            self._order.get_nowait()[1].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._waiting))
                batch = self._take()
                self._changed.notify_all()
            self._order.put_nowait((batch, asyncio.create_task(self._process(batch))))

    def _room(self) -> int:
        """How many items may wait before `add` blocks."""
        if self._key is None:
            return self.max_batch
        return self.max_batch * max(1, len({self._key(item) for item in self._waiting}))

    def _take(self) -> list[E]:
        """The next batch out of the waiting items (they keep their order)."""
        if self._key is None:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            return batch
        first = self._key(self._waiting[0])
        batch, rest = [], []
        for item in self._waiting:
            if len(batch) < self.max_batch and self._key(item) == first:
                batch.append(item)
            else:
                rest.append(item)
        self._waiting = rest
        return batch

    async def _complete(self) -> None:
        while True:
            batch, task = await self._order.get()
            await self._finish(batch, await task)
            async with self._changed:
                self._unfinished -= len(batch)
                self._changed.notify_all()
            self._slots.release()

    async def _guard(self, loop: Awaitable[None]) -> None:
        """A failure in either loop stops the dispatcher and is raised to `add`/`drain`."""
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, not swallowed
            async with self._changed:
                self._error = exc
                self._changed.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("batch dispatcher failed") from self._error
