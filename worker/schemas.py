"""Wire formats: the input message, the labelled output and the dead-letter record."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from contracts.text import normalize_text

MAX_META_DEPTH = 32
"""Deepest nesting accepted in `meta`: orjson cannot serialise past 254 levels, so a deeper
`meta` would make the labelled record unpublishable; it is rejected up front instead."""

# Control characters (Unicode Cc) other than tab, line feed and carriage return: refused in ids
# and tags; in `text` and `title` they are normalised instead (`contracts/text.py`).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_ID_CHARS = 512
"""Longest message id: input ids, and the feedback ids that must match them."""


def control_character(value: str) -> str | None:
    """Why `value` cannot be an id or tag (its first control character), or None."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"control character U+{ord(found.group()):04X} at position {found.start()}"


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

    id: StrictStr = Field(min_length=1, max_length=MAX_ID_CHARS)
    text: StrictStr = Field(min_length=1)
    title: StrictStr | None = None
    source: StrictStr | None = None
    lang: StrictStr | None = None
    ts: datetime | None = Field(None, description="ISO-8601 string or epoch milliseconds.")
    meta: dict[str, Any] | None = None
    truncated: ClassVar[bool] = False
    """Whether `text` was cut to `MAX_TEXT_CHARS`: only validation makes a `TruncatedMessage`,
    never the input. A class attribute, not pydantic private state, which cost every message
    ~3 µs of `init_private_attributes` (bench/README.md, worker profile)."""

    @field_validator("id", mode="before")
    @classmethod
    def _integer_id(cls, value: Any) -> Any:
        """Database keys are integers: `{"id": 123}` means the id "123"."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("id", "source", "lang")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        problem = control_character(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not normalize_text(value).strip():
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


class ModelRef(BaseModel):
    name: str
    version: str


class TruncatedMessage(InputMessage):
    """An `InputMessage` whose text validation cut to `MAX_TEXT_CHARS`."""

    truncated: ClassVar[bool] = True


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
    truncated: bool = Field(
        False, description="The text was longer than MAX_TEXT_CHARS and labelled from its start."
    )
    meta: dict[str, Any] | None = None


class ErrorInfo(BaseModel):
    type: str
    detail: str


class DeadLetter(BaseModel):
    """An input that could not be labelled, with the reason, its original bytes and headers."""

    error: ErrorInfo
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    value_size: int = Field(0, description="Size of the original value in bytes.")
    value_truncated: bool = Field(
        False,
        description="value_b64 holds only the start of the value: the whole would not fit "
        "the producer's request limit (PRODUCER_MAX_REQUEST_BYTES).",
    )
    headers: list[tuple[str, str]] = Field(
        default_factory=list,
        description="The input's headers as [name, base64 value] pairs, in order, for a replay; "
        "they are also on the dead-letter record itself.",
    )
    ts: datetime


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the three wire formats, for docs and for consumers."""
    return {
        "input": InputMessage.model_json_schema(),
        "labelled": LabelledRecord.model_json_schema(),
        "deadletter": DeadLetter.model_json_schema(),
    }
