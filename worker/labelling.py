"""Build output records: labelled results, review copies and dead letters (pure functions).

Both carry the input's headers (minus the ones a route drops) and say what they are:
`content-type`, and on labelled records `labelstream-model` and `labelstream-version`. Every
record is built to fit the producer's request limit, so the broker never refuses one.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import numpy as np
import orjson

from contracts.review import Review
from contracts.text import model_text
from worker.messages import Headers, OutRecord, RawMessage
from worker.schemas import DeadLetter, ErrorInfo, InputMessage
from worker.validation import Rejection

CONTENT_TYPE = ("content-type", b"application/json")
OWN_HEADERS = frozenset({"content-type", "labelstream-model", "labelstream-version"})
"""Headers the worker sets itself; an input's own copies (a replayed output) are replaced."""
RECORD_OVERHEAD = 512
"""Bytes kept free of a request for the record and batch framing around key, value, headers."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def carried_headers(headers: Headers, drop: Collection[str]) -> Headers:
    """The input headers an output carries: all but the dropped ones and the worker's own."""
    if not headers:
        return ()
    drop = {name.lower() for name in drop}
    return tuple(
        (name, value)
        for name, value in headers
        if name.lower() not in OWN_HEADERS and name.lower() not in drop
    )


def record_size(key: bytes | None, value: bytes, headers: Headers) -> int:
    """What the record costs of a produce request, framing included."""
    carried = sum(len(name) + len(value or b"") for name, value in headers)
    return len(key or b"") + len(value) + carried + RECORD_OVERHEAD


def score_rows(probs: np.ndarray) -> tuple[list[list[float]], list[list[float]]]:
    """A batch's probabilities as Python floats, and rounded to 6 decimals, at numpy's speed.

    The model returns float32: times 10^6 such a value is exact in float64, so numpy's
    round-half-even is exactly Python's `round(p, 6)` (~0.6 µs a score, in a loop). Any other
    dtype goes through `round` itself."""
    values = probs.tolist()
    if probs.dtype == np.float32:
        return values, np.round(probs.astype(np.float64), 6).tolist()
    return values, [[round(float(p), 6) for p in row] for row in values]


def labelled_record(
    raw: RawMessage,
    message: InputMessage,
    *,
    sink: str,
    model: str,
    version: str,
    labels: list[str],
    probs: Sequence[float],
    scores: Sequence[float],
    now: datetime,
    drop_headers: Collection[str] = (),
) -> OutRecord:
    """The labelled record of one message; `probs` and `scores` (rounded) from `score_rows`."""
    best = probs.index(max(probs))
    ts_in = datetime.fromtimestamp(raw.timestamp, tz=UTC)
    # The `LabelledRecord` fields, built as a plain dict: a pydantic model per message cost
    # more than the rest of labelling (tests/unit/test_labelling.py holds the bytes equal).
    body = {
        "id": message.id,
        "label": labels[best],
        "confidence": probs[best],
        "scores": dict(zip(labels, scores, strict=True)),
        "model": {"name": model, "version": version},
        "ts_in": ts_in,
        "ts_out": now,
        "latency_ms": round((now - ts_in).total_seconds() * 1000.0, 3),
        "truncated": message.truncated,
        "meta": message.meta,
    }
    headers = (
        *carried_headers(raw.headers, drop_headers),
        CONTENT_TYPE,
        ("labelstream-model", model.encode()),
        ("labelstream-version", version.encode()),
    )
    value = orjson.dumps(body, option=orjson.OPT_UTC_Z)
    return OutRecord(sink, message.id.encode("utf-8"), value, headers, origin=raw)


def review_record(
    message: InputMessage,
    *,
    topic: str,
    route: str,
    model: str,
    version: str,
    label: str,
    confidence: float,
    scores: dict[str, float],
    now: datetime,
    origin: RawMessage,
) -> OutRecord:
    """The copy of an uncertain labelled record for a person to check (`contracts.review`):
    the text as the model read it, so `trainer retrain` trains on what was judged."""
    review = Review(
        id=message.id,
        text=model_text(message.text, message.title),
        label=label,
        confidence=confidence,
        scores=scores,
        model=model,
        version=version,
        route=route,
        ts=now.isoformat(),
    )
    return OutRecord(topic, message.id.encode("utf-8"), review.to_json(), (CONTENT_TYPE,), origin)


def dead_letter_record(
    raw: RawMessage,
    rejection: Rejection,
    *,
    topic: str,
    now: datetime,
    max_bytes: int = 1_000_000,
    drop_headers: Collection[str] = (),
) -> OutRecord:
    """The dead letter of `raw`, with its original value cut to fit `max_bytes` if need be.

    The body keeps every original header (base64) so a replay can restore them."""
    headers = (*carried_headers(raw.headers, drop_headers), CONTENT_TYPE)
    value = raw.value or b""
    record = DeadLetter(
        error=ErrorInfo(type=rejection.type, detail=rejection.detail),
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key_b64=_b64(raw.key),
        value_b64=None,
        value_size=len(value),
        headers=[(name, _b64(data or b"")) for name, data in raw.headers],
        ts=now,
    )
    body = record.model_dump(mode="json")
    room = max_bytes - record_size(raw.key, orjson.dumps(body), headers) - 8
    keep = max(0, room) // 4 * 3  # base64 turns 3 bytes into 4
    if raw.value is not None:
        body["value_b64"] = _b64(value[:keep])
        body["value_truncated"] = keep < len(value)
    return OutRecord(topic, raw.key, orjson.dumps(body), headers, origin=raw)
