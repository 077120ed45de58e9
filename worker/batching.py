"""Micro-batch policy: split a consumed batch into valid texts and rejects, and size requests.

Faust's `take_events` gathers up to `max_batch` events within `max_wait`; this module decides
what of that batch goes to Triton, and in how many requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from worker.messages import RawMessage
from worker.schemas import InputMessage
from worker.validation import Rejection

T = TypeVar("T")


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
