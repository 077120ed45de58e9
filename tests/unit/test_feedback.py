"""Feedback records are validated like input: each bad one has a precise reason from a closed
set, and its dead letter has the input dead letters' format."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.review import Feedback
from tests.unit.json_strategies import json_values as json_values_of
from worker.feedback import FEEDBACK_REASONS, feedback_dead_letter, validate_feedback
from worker.messages import RawMessage
from worker.schemas import MAX_ID_CHARS, DeadLetter
from worker.settings import WorkerSettings
from worker.validation import REASONS, Rejection

MAX_BYTES = 1000
GOOD = {"id": "n-1", "label": "Sports", "by": "ana", "ts": "2026-12-02T12:00:00+00:00"}


def check(value: bytes | None, key: bytes | None = None) -> Feedback | Rejection:
    return validate_feedback(value, key, MAX_BYTES)


def with_fields(**changes: object) -> bytes:
    fields = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in fields.items() if v is not ...})


def test_a_valid_record_is_the_contract_record():
    assert check(with_fields(text="Team wins the cup")) == Feedback(
        "n-1", "Sports", "ana", "2026-12-02T12:00:00+00:00", "Team wins the cup"
    )


def test_what_worker_review_writes_is_valid():
    written = Feedback("n-1", "Sports", "ana", datetime.now(UTC).isoformat(), "Team wins")
    assert check(written.to_json(), b"n-1") == written


def test_text_is_optional_and_unknown_fields_are_ignored():
    assert check(with_fields(note="x", score=3)) == Feedback(**GOOD)


def test_epoch_seconds_become_iso_utc():
    feedback = check(with_fields(ts=1_764_676_800))
    assert isinstance(feedback, Feedback)
    assert feedback.ts == "2025-12-02T12:00:00+00:00"


def test_an_iso_ts_is_kept_as_given():
    feedback = check(with_fields(ts="2026-12-02T12:00:00Z"))
    assert isinstance(feedback, Feedback) and feedback.ts == "2026-12-02T12:00:00Z"


def test_id_taken_from_the_key_when_the_value_has_none():
    feedback = check(with_fields(id=...), key=b"k-9")
    assert isinstance(feedback, Feedback) and feedback.id == "k-9"


def test_the_value_id_wins_over_the_key():
    feedback = check(with_fields(), key=b"other")
    assert isinstance(feedback, Feedback) and feedback.id == "n-1"


def test_id_limit_is_the_input_id_limit():
    assert isinstance(check(with_fields(id="i" * MAX_ID_CHARS)), Feedback)
    too_long = check(with_fields(id="i" * (MAX_ID_CHARS + 1)))
    assert isinstance(too_long, Rejection) and too_long.type == "invalid_field"


@pytest.mark.parametrize(
    ("value", "key", "reason", "detail"),
    [
        (None, None, "empty_message", "message value is empty"),
        (b"", None, "empty_message", "message value is empty"),
        (b"x" * (MAX_BYTES + 1), None, "message_too_large", "1001 bytes > limit 1000"),
        (b'{"id": "caf\xe9"}', None, "invalid_utf8", "byte 11: invalid continuation byte"),
        (
            with_fields(id=...),
            b"\xff",
            "invalid_utf8",
            "feedback has no id and its key is not UTF-8",
        ),
        (b'{"id": ', None, "invalid_json", "unexpected end of data: line 1 column 8 (char 7)"),
        (b"[1, 2]", None, "not_an_object", "top-level JSON is list"),
        (b'"a string"', None, "not_an_object", "top-level JSON is str"),
        (with_fields(id=...), None, "missing_field", "id: Field required"),
        (with_fields(label=...), None, "missing_field", "label: Field required"),
        (
            with_fields(by=..., ts=...),
            None,
            "missing_field",
            "by: Field required; ts: Field required",
        ),
        (with_fields(id=""), None, "invalid_field", "id: String should have at least 1 character"),
        (with_fields(id=7), None, "invalid_field", "id: Input should be a valid string"),
        (
            with_fields(id="a\x01"),
            None,
            "invalid_field",
            "id: Value error, control character U+0001 at position 1",
        ),
        (
            with_fields(label=""),
            None,
            "invalid_field",
            "label: String should have at least 1 character",
        ),
        (with_fields(by="  "), None, "invalid_field", "by: Value error, must not be blank"),
        (with_fields(text=5), None, "invalid_field", "text: Input should be a valid string"),
        (with_fields(text=" "), None, "invalid_field", "text: Value error, must not be blank"),
        (
            with_fields(ts=True),
            None,
            "invalid_field",
            "ts: Value error, ts must be an ISO-8601 string or epoch seconds",
        ),
        (
            with_fields(ts="yesterday"),
            None,
            "invalid_field",
            "ts: Value error, ts must be an ISO-8601 string or epoch seconds: "
            "Invalid isoformat string: 'yesterday'",
        ),
        (with_fields(ts=1e300), None, "invalid_field", "ts: Value error, ts must be an ISO-8601"),
        (
            with_fields(ts={"s": 1}),
            None,
            "invalid_field",
            "ts: Value error, ts must be an ISO-8601",
        ),
        # missing and invalid together: invalid, naming both (as for input)
        (
            with_fields(id=..., label=3),
            None,
            "invalid_field",
            "id: Field required; label: Input should be a valid string",
        ),
    ],
)
def test_each_reason_is_precise(value, key, reason, detail):
    outcome = check(value, key)
    assert isinstance(outcome, Rejection)
    assert outcome.type == reason
    assert outcome.detail.startswith(detail)


def test_size_checked_before_decoding():
    outcome = check(b"\xff" * (MAX_BYTES + 1))
    assert outcome == Rejection("message_too_large", "1001 bytes > limit 1000")


def test_feedback_reasons_are_input_reasons():
    assert FEEDBACK_REASONS <= REASONS


def test_dead_letter_has_the_input_dead_letter_format():
    settings = WorkerSettings(_env_file=None, deadletter_topic="dl", drop_headers=["x-secret"])
    raw = RawMessage(
        "labelstream.feedback", 1, 9, b"n-1", b"{}", 1.0, (("x-secret", b"s"), ("x-a", b"1"))
    )
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    rejection = check(raw.value, raw.key)
    assert isinstance(rejection, Rejection)
    record = feedback_dead_letter(raw, rejection, settings, now)
    assert record.topic == "dl" and record.key == b"n-1" and record.origin is raw
    assert record.headers == (("x-a", b"1"), ("content-type", b"application/json"))
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.error.type == "missing_field" and letter.error.detail == rejection.detail
    assert (letter.topic, letter.partition, letter.offset) == ("labelstream.feedback", 1, 9)
    assert base64.b64decode(letter.value_b64 or "") == b"{}" and letter.ts == now


json_values = json_values_of(text_size=30, width=3, leaves=12)
records = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.text(max_size=600),
        "label": json_values,
        "by": json_values,
        "ts": json_values
        | st.integers(min_value=-(10**20), max_value=10**20)
        | st.datetimes().map(str)
        | st.datetimes().map(datetime.isoformat),
        "text": json_values,
        "extra": json_values,
    },
)
keys = st.none() | st.binary(max_size=8)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_well_formed(outcome: Feedback | Rejection) -> None:
    """Either a record `trainer retrain` can use as it is, or a documented reason."""
    if isinstance(outcome, Rejection):
        assert outcome.type in FEEDBACK_REASONS, outcome
        assert outcome.detail
        return
    assert isinstance(outcome, Feedback)
    assert outcome.id and outcome.label.strip() and outcome.by.strip()
    datetime.fromisoformat(outcome.ts)
    assert check(outcome.to_json()) == outcome  # what passes once passes again


@FUZZ
@given(st.binary(max_size=MAX_BYTES + 16), keys)
def test_arbitrary_bytes_never_raise(value: bytes, key: bytes | None) -> None:
    assert_well_formed(check(value, key))


@FUZZ
@given(records, keys)
def test_arbitrary_records_never_raise(record: dict, key: bytes | None) -> None:
    # stdlib json: big integers and lone surrogates reach the validator too
    assert_well_formed(check(json.dumps(record).encode(), key))


@FUZZ
@given(json_values)
def test_arbitrary_json_documents_never_raise(document: object) -> None:
    assert_well_formed(check(json.dumps(document).encode()))


@FUZZ
@given(st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False))
def test_any_numeric_ts_never_raises(ts: float) -> None:
    # orjson reads 64-bit integers and finite floats; datetime refuses most of them, three ways
    assert_well_formed(check(json.dumps({**GOOD, "ts": ts}).encode()))
