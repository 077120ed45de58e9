"""Build output records: labelled results and dead letters (pure functions)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import numpy as np
import orjson

from worker.messages import OutRecord, RawMessage
from worker.schemas import DeadLetter, ErrorInfo, InputMessage, LabelledRecord, ModelRef
from worker.validation import Rejection


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def labelled_record(
    raw: RawMessage,
    message: InputMessage,
    *,
    sink: str,
    model: str,
    version: str,
    labels: list[str],
    probs: np.ndarray,
    now: datetime,
) -> OutRecord:
    best = int(np.argmax(probs))
    ts_in = datetime.fromtimestamp(raw.timestamp, tz=UTC)
    record = LabelledRecord(
        id=message.id,
        label=labels[best],
        confidence=float(probs[best]),
        scores={label: round(float(p), 6) for label, p in zip(labels, probs, strict=True)},
        model=ModelRef(name=model, version=version),
        ts_in=ts_in,
        ts_out=now,
        latency_ms=round((now - ts_in).total_seconds() * 1000.0, 3),
        meta=message.meta,
    )
    return OutRecord(sink, message.id.encode("utf-8"), orjson.dumps(record.model_dump(mode="json")))


def dead_letter_record(
    raw: RawMessage, rejection: Rejection, *, topic: str, now: datetime
) -> OutRecord:
    record = DeadLetter(
        error=ErrorInfo(type=rejection.type, detail=rejection.detail),
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key_b64=_b64(raw.key),
        value_b64=_b64(raw.value),
        ts=now,
    )
    return OutRecord(topic, raw.key, orjson.dumps(record.model_dump(mode="json")))
