"""Validate feedback records (`labelstream.feedback`, `contracts/review.py`) like input.

A person's label is training data for `trainer retrain`, so a bad record must not slip in: it
becomes a dead letter with its reason, in the same format as a bad input message. Checks run
cheapest first: size before decoding, UTF-8 before JSON, JSON before the fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from contracts.review import Feedback
from worker.labelling import dead_letter_record
from worker.messages import OutRecord, RawMessage
from worker.schemas import MAX_ID_CHARS, control_character
from worker.settings import WorkerSettings
from worker.validation import REASONS, Rejection, describe_errors, json_object

FEEDBACK_REASONS = REASONS
"""Every `Rejection.type` that `validate_feedback` can give: the input's reasons
(`worker.validation.REASONS`), meaning what they mean for input messages."""

TS_RULE = "ts must be an ISO-8601 string or epoch seconds"


class _FeedbackFields(BaseModel):
    """The feedback fields as pydantic checks them; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: StrictStr = Field(min_length=1, max_length=MAX_ID_CHARS)
    label: StrictStr = Field(min_length=1)
    by: StrictStr = Field(min_length=1)
    ts: StrictStr
    text: StrictStr | None = None

    @field_validator("id")
    @classmethod
    def _id_like_input_ids(cls, value: str) -> str:
        problem = control_character(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("label", "by", "text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _iso_ts(cls, value: Any) -> Any:
        """An ISO string is kept as given; epoch seconds become ISO 8601 (UTC)."""
        if isinstance(value, bool):
            raise ValueError(TS_RULE)
        try:
            if isinstance(value, int | float):
                return datetime.fromtimestamp(value, tz=UTC).isoformat()
            if isinstance(value, str):
                datetime.fromisoformat(value)
                return value
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"{TS_RULE}: {exc}") from None
        raise ValueError(TS_RULE)


def _payload(value: bytes) -> dict[str, Any] | Rejection:
    """The decoded JSON object, or why the bytes are not one."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"byte {exc.start}: {exc.reason}")
    return json_object(text)


def _with_key_id(payload: dict[str, Any], key: bytes | None) -> dict[str, Any] | Rejection:
    """Like an input message's: the value's `id`, else the Kafka key."""
    if "id" in payload or not key:
        return payload
    try:
        return {**payload, "id": key.decode("utf-8")}
    except UnicodeDecodeError:
        return Rejection("invalid_utf8", "feedback has no id and its key is not UTF-8")


def validate_feedback(
    value: bytes | None, key: bytes | None, max_bytes: int
) -> Feedback | Rejection:
    """Parse and validate one feedback record. Never raises for bad input."""
    if value is None or len(value) == 0:
        return Rejection("empty_message", "message value is empty")
    if len(value) > max_bytes:
        return Rejection("message_too_large", f"{len(value)} bytes > limit {max_bytes}")
    payload = _payload(value)
    if isinstance(payload, Rejection):
        return payload
    fields = _with_key_id(payload, key)
    if isinstance(fields, Rejection):
        return fields
    try:
        checked = _FeedbackFields.model_validate(fields)
    except ValidationError as exc:
        return describe_errors(exc, {})
    return Feedback(checked.id, checked.label, checked.by, checked.ts, checked.text)


def feedback_dead_letter(
    raw: RawMessage, rejection: Rejection, settings: WorkerSettings, now: datetime
) -> OutRecord:
    """The dead letter of a bad feedback record: the input dead letters' format and topic, so
    one reader of the dead-letter topic sees both (its `topic` field tells them apart)."""
    return dead_letter_record(
        raw,
        rejection,
        topic=settings.deadletter_topic,
        now=now,
        max_bytes=settings.producer_max_request_bytes,
        drop_headers=settings.drop_headers,
    )
