"""Wire formats: the input message, the labelled output and the dead-letter record."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

MAX_META_DEPTH = 32
"""Deepest nesting accepted in `meta`: orjson cannot serialise past 254 levels, so a deeper
`meta` would make the labelled record unpublishable; it is rejected up front instead."""

# Control characters (Unicode Cc) other than tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of nested objects/arrays (a scalar is 0), walked breadth-first without recursion
    so a hostile document cannot exhaust the stack; stops counting once past `limit`."""
    depth = 0
    level = [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [c for box in containers for c in (box.values() if isinstance(box, dict) else box)]
    return depth


class InputMessage(BaseModel):
    """A text to classify, as producers write it to a source topic."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: StrictStr = Field(min_length=1, max_length=512)
    text: StrictStr = Field(min_length=1)
    title: StrictStr | None = None
    source: StrictStr | None = None
    lang: StrictStr | None = None
    ts: datetime | None = Field(None, description="ISO-8601 string or epoch milliseconds.")
    meta: dict[str, Any] | None = None

    @field_validator("id", "text", "title", "source", "lang")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        found = _CONTROL.search(value) if value is not None else None
        if found:
            raise ValueError(
                f"control character U+{ord(found.group()):04X} at position {found.start()}"
            )
        return value

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value

    @field_validator("meta", mode="before")
    @classmethod
    def _meta_not_too_deep(cls, value: Any) -> Any:
        if nesting_depth(value, MAX_META_DEPTH) > MAX_META_DEPTH:
            raise ValueError(f"nested deeper than {MAX_META_DEPTH} levels")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, bool):
            raise ValueError("ts must be an ISO-8601 string or epoch milliseconds")
        try:
            if isinstance(value, int | float):
                return datetime.fromtimestamp(value / 1000.0, tz=UTC)
            if isinstance(value, str):
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (OverflowError, OSError) as exc:  # out of datetime's range: bad input, not a crash
            raise ValueError(f"ts out of range: {exc}") from None
        raise ValueError("ts must be an ISO-8601 string or epoch milliseconds")


def model_text(text: str, title: str | None = None) -> str:
    """What the classifier reads: the title, when there is one, joined to the text.

    The trainer joins a title column the same way, so training and serving see the same input.
    """
    title = (title or "").strip()
    return f"{title}. {text}" if title else text


class ModelRef(BaseModel):
    name: str
    version: str


class LabelledRecord(BaseModel):
    """One classified message, keyed by its id on the sink topic."""

    id: str
    label: str
    confidence: float
    scores: dict[str, float]
    model: ModelRef
    ts_in: datetime = Field(description="When the input reached Kafka (record timestamp).")
    ts_out: datetime = Field(description="When the worker labelled it.")
    latency_ms: float
    meta: dict[str, Any] | None = None


class ErrorInfo(BaseModel):
    type: str
    detail: str


class DeadLetter(BaseModel):
    """An input that could not be labelled, with the reason and the original bytes."""

    error: ErrorInfo
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    ts: datetime


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the three wire formats, for docs and for consumers."""
    return {
        "input": InputMessage.model_json_schema(),
        "labelled": LabelledRecord.model_json_schema(),
        "deadletter": DeadLetter.model_json_schema(),
    }
