"""Turn raw Kafka bytes into a validated `InputMessage`, or a precise reason why not.

Checks run cheapest first: size before decoding, UTF-8 before JSON, JSON before the route's
mapping (`worker/mapping.py`), the mapping before the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from worker.mapping import DEFAULT_MAPPING, Mapping, Missing
from worker.messages import RawMessage
from worker.schemas import InputMessage, TruncatedMessage

REASONS = frozenset(
    {
        "empty_message",
        "message_too_large",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
    }
)
"""Every `Rejection.type` that `validate` can give (the README lists them; the fuzz test holds
`validate` to this set)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be labelled; becomes the dead-letter `error`."""

    type: str
    detail: str


def describe_errors(exc: ValidationError, names: dict[str, str | None]) -> Rejection:
    """One detail per error, naming each field by the pointer the route read it from."""
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    parts = []
    for e in errors:
        loc = [str(p) for p in e["loc"]]
        if loc and names.get(loc[0]) and names[loc[0]] != f"/{loc[0]}":
            loc[0] = f"{loc[0]} ({names[loc[0]]})"
        parts.append(f"{'.'.join(loc) or '<root>'}: {e['msg']}")
    kind = "missing_field" if kinds == {"missing"} else "invalid_field"
    return Rejection(kind, "; ".join(parts))


def json_object(text: str) -> dict[str, Any] | Rejection:
    """The decoded JSON object, or why the text is not one (input and feedback alike)."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc))
    if not isinstance(payload, dict):
        return Rejection("not_an_object", f"top-level JSON is {type(payload).__name__}")
    return payload


def _fields(raw: RawMessage, text: str, mapping: Mapping) -> dict[str, Any] | Rejection:
    """The canonical fields of the decoded value, by the route's mapping."""
    if mapping.value_format == "text":
        fields = mapping.from_text(raw, text)
    else:
        payload = json_object(text)
        if isinstance(payload, Rejection):
            return payload
        fields = mapping.from_json(raw, payload)
    if isinstance(fields, Missing):
        return Rejection(fields.reason, fields.detail)
    return fields


def validate(
    raw: RawMessage, *, max_bytes: int, max_text_chars: int, mapping: Mapping = DEFAULT_MAPPING
) -> InputMessage | Rejection:
    """Parse and validate one message. Never raises for bad input.

    A text longer than `max_text_chars` is cut to that length and flagged `truncated` (the model
    reads its first 128 tokens anyway); only `max_bytes` is a hard limit.
    """
    value = raw.value
    if value is None or len(value) == 0:
        return Rejection("empty_message", "message value is empty")
    if len(value) > max_bytes:
        return Rejection("message_too_large", f"{len(value)} bytes > limit {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"byte {exc.start}: {exc.reason}")
    fields = _fields(raw, text, mapping)
    if isinstance(fields, Rejection):
        return fields
    try:
        message = InputMessage.model_validate(fields)
    except ValidationError as exc:
        return describe_errors(exc, mapping.names)
    if len(message.text) > max_text_chars:
        return TruncatedMessage.model_construct(
            message.model_fields_set, **{**dict(message), "text": message.text[:max_text_chars]}
        )
    return message
