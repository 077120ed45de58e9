"""Wire formats: the input message, the labelled output and the dead-letter record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


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

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, bool):
            raise ValueError("ts must be an ISO-8601 string or epoch milliseconds")
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
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
