"""Errors by kind, so no message can stall a route.

Transient failures (Triton unavailable, timed out or missing the model; retriable Kafka errors;
lost connections) are retried with backoff, forever: the message is fine, the world is not.
Any other failure is the message's own (or a bug it triggers): the batch is bisected until the
failing message is alone, and that message becomes a `processing_error` dead letter while the
rest of its batch is labelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from tritonclient.utils import InferenceServerException

from worker.batching import halves
from worker.inference import backoff_delays

T = TypeVar("T")
R = TypeVar("R")

log = structlog.get_logger(__name__)

TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
"""A record the producer or the broker refuses for its size."""
RECORD_REFUSALS = (
    *TOO_LARGE,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    PolicyViolationError,
)
"""What the broker answers about the records themselves. Inside a transaction any other
non-retriable error (out-of-order sequence, fenced epoch, a dead sender) is the producer's state,
not the records': the records are sent again by a new producer, never dead-lettered for it."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later can succeed."""
    if isinstance(exc, InferenceServerException):
        return True
    if isinstance(exc, KafkaTimeoutError):  # marked not retriable, yet only a slow broker
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, TimeoutError | ConnectionError)


def is_record_refused(exc: BaseException) -> bool:
    """Refused for the records (`RECORD_REFUSALS`), whichever producer sends them."""
    return isinstance(exc, RECORD_REFUSALS)


def is_refused_for_good(exc: BaseException) -> bool:
    """The broker said no and will say no again (too large, not authorised, invalid topic);
    anything else, an unknown exception included, is worth sending again."""
    return isinstance(exc, TOO_LARGE) or (isinstance(exc, KafkaError) and not is_transient(exc))


async def isolate(
    items: Sequence[T],
    attempt: Callable[[Sequence[T]], Awaitable[R]],
    fail_one: Callable[[T, BaseException], R],
    *,
    retry_initial_s: float,
    retry_max_s: float,
    what: str = "batch",
) -> list[R]:
    """`attempt(items)`, retried while it fails transiently; on any other failure, the outcomes
    of its two halves, down to `fail_one(item, exc)` for an item that fails alone. The outcomes
    are in the order of `items`."""
    for delay in backoff_delays(retry_initial_s, retry_max_s):
        try:
            return [await attempt(items)]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):
                log.warning("batch_retry", stage=what, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            if len(items) == 1:
                log.error("message_failed", stage=what, error=repr(exc), exc_info=exc)
                return [fail_one(items[0], exc)]
            left, right = halves(items)
            outcomes = []
            for half in (left, right):
                outcomes += await isolate(
                    half,
                    attempt,
                    fail_one,
                    retry_initial_s=retry_initial_s,
                    retry_max_s=retry_max_s,
                    what=what,
                )
            return outcomes
    raise AssertionError("backoff_delays never ends")
