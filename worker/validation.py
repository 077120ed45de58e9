"""Turn raw Kafka bytes into a validated `InputMessage`, or a precise reason why not.

Checks run cheapest first: size before decoding, UTF-8 before JSON, JSON before schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from worker.messages import RawMessage
from worker.schemas import InputMessage

REASONS = frozenset(
    {
        "empty_message",
        "message_too_large",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "text_too_long",
    }
)
"""Every `Rejection.type` that `validate` can give (the README lists them; the fuzz test holds
`validate` to this set)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be labelled; becomes the dead-letter `error`."""

    type: str
    detail: str


def _describe(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors]
    kind = "missing_field" if kinds == {"missing"} else "invalid_field"
    return Rejection(kind, "; ".join(parts))


def validate(raw: RawMessage, *, max_bytes: int, max_text_chars: int) -> InputMessage | Rejection:
    """Parse and validate one message. Never raises for bad input."""
    value = raw.value
    if value is None or len(value) == 0:
        return Rejection("empty_message", "message value is empty")
    if len(value) > max_bytes:
        return Rejection("message_too_large", f"{len(value)} bytes > limit {max_bytes}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"byte {exc.start}: {exc.reason}")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc))
    if not isinstance(payload, dict):
        return Rejection("not_an_object", f"top-level JSON is {type(payload).__name__}")
    if "id" not in payload and raw.key:
        try:
            payload["id"] = raw.key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", "message has no id and its key is not UTF-8")
    try:
        message = InputMessage.model_validate(payload)
    except ValidationError as exc:
        return _describe(exc)
    if len(message.text) > max_text_chars:
        return Rejection("text_too_long", f"{len(message.text)} chars > limit {max_text_chars}")
    return message
