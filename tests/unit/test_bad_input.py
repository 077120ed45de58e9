"""Hostile input against the validator: fuzzed bytes and JSON, limits before parsing, and the
defined behaviour for control characters, deep `meta` and out-of-range timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.malformed import MAX_BYTES as MAX_MESSAGE_BYTES
from tests.integration.malformed import generate
from tests.unit.json_strategies import json_values as json_values_of
from worker import validation
from worker.labelling import labelled_record
from worker.messages import RawMessage
from worker.schemas import MAX_META_DEPTH, InputMessage, nesting_depth
from worker.validation import REASONS, Rejection, validate

MAX_BYTES = 4096
MAX_CHARS = 1000


def check(value: bytes | None, key: bytes | None = None) -> InputMessage | Rejection:
    raw = RawMessage("news.raw", 0, 1, key, value, 1_700_000_000.0)
    return validate(raw, max_bytes=MAX_BYTES, max_text_chars=MAX_CHARS)


def assert_well_formed(outcome: InputMessage | Rejection) -> None:
    """Either a message that can be labelled and published, or a documented reason."""
    if isinstance(outcome, Rejection):
        assert outcome.type in REASONS, outcome
        assert outcome.detail
        return
    assert isinstance(outcome, InputMessage)
    raw = RawMessage("news.raw", 0, 1, None, b"{}", 1_700_000_000.0)
    # A valid message must also make a publishable labelled record (e.g. `meta` serialises).
    record = labelled_record(
        raw,
        outcome,
        sink="news.labelled",
        model="m",
        version="1",
        labels=["a", "b"],
        probs=[0.3, 0.7],
        scores=[0.3, 0.7],
        now=datetime.now(UTC),
    )
    assert orjson.loads(record.value)["id"] == outcome.id


json_values = json_values_of()
field_values = json_values | st.text(max_size=60) | st.integers() | st.floats(allow_nan=False)
messages = st.fixed_dictionaries(
    {},
    optional={
        "id": field_values,
        "text": field_values,
        "title": field_values,
        "source": field_values,
        "lang": field_values,
        "ts": field_values
        | st.integers(min_value=-(10**20), max_value=10**20)
        | st.datetimes().map(str),
        "meta": json_values,
    },
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=MAX_BYTES + 64), st.one_of(st.none(), st.binary(max_size=16)))
def test_arbitrary_bytes_never_raise(value: bytes, key: bytes | None) -> None:
    assert_well_formed(check(value, key))


@FUZZ
@given(messages, st.one_of(st.none(), st.binary(max_size=16)))
def test_arbitrary_json_objects_never_raise(payload: dict, key: bytes | None) -> None:
    # stdlib json: big integers and lone surrogates reach the validator too
    assert_well_formed(check(json.dumps(payload).encode(), key))


@FUZZ
@given(json_values)
def test_arbitrary_json_documents_never_raise(document: object) -> None:
    assert_well_formed(check(json.dumps(document).encode()))


@FUZZ
@given(
    st.text(max_size=200),
    st.integers(min_value=0, max_value=199),
    st.binary(min_size=1, max_size=4),
)
def test_mutated_valid_messages_never_raise(text: str, at: int, noise: bytes) -> None:
    value = orjson.dumps({"id": "a", "text": text or "x"})
    at = min(at, len(value))
    assert_well_formed(check(value[:at] + noise + value[at:]))


def test_size_limit_enforced_before_decoding_or_parsing() -> None:
    huge = orjson.dumps({"id": "a", "text": "z" * (MAX_BYTES * 10)})
    with (
        mock.patch.object(
            validation.orjson, "loads", side_effect=AssertionError("parsed")
        ) as loads,
        mock.patch.object(
            validation.InputMessage, "model_validate", side_effect=AssertionError("validated")
        ) as schema,
    ):
        outcome = check(huge)
    assert outcome == Rejection("message_too_large", f"{len(huge)} bytes > limit {MAX_BYTES}")
    loads.assert_not_called()
    schema.assert_not_called()


def test_message_at_the_limit_is_parsed() -> None:
    value = orjson.dumps({"id": "a", "text": "z"})
    value = value[:-1] + b" " * (MAX_BYTES - len(value)) + b"}"
    assert len(value) == MAX_BYTES
    assert isinstance(check(value), InputMessage)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"id": "a\u001b", "text": "x"}, "id: Value error, control character U+001B"),
        ({"id": "a\u0085", "text": "x"}, "id: Value error, control character U+0085"),
        ({"id": "a", "text": "x", "source": "w\u0000"}, "source: Value error, control character"),
        ({"id": "a", "text": "x", "lang": "e\u007fn"}, "lang: Value error, control character"),
    ],
)
def test_control_characters_in_ids_and_tags_are_rejected(payload: dict, fragment: str) -> None:
    outcome = check(orjson.dumps(payload))
    assert isinstance(outcome, Rejection) and outcome.type == "invalid_field"
    assert fragment in outcome.detail


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "a", "text": "bell \u0007 here"},
        {"id": "a", "text": "nul\u0000 inside"},
        {"id": "a", "text": "x", "title": "t\u007f"},
        {"id": "a", "text": "c1 \u0085 \u0096 \u0097 dash"},
        {"id": "a", "text": "back\u0008space and form\u000cfeed"},
    ],
)
def test_control_characters_in_text_and_title_are_accepted(payload: dict) -> None:
    assert isinstance(check(orjson.dumps(payload)), InputMessage)


def test_text_of_control_characters_only_is_blank() -> None:
    outcome = check(orjson.dumps({"id": "a", "text": "\u0000\u0007\u0081"}))
    assert isinstance(outcome, Rejection) and outcome.type == "invalid_field"
    assert "blank" in outcome.detail


def test_tab_newline_and_carriage_return_are_text() -> None:
    assert isinstance(
        check(orjson.dumps({"id": "a", "text": "line\tone\r\nline two"})), InputMessage
    )


def test_raw_control_characters_are_not_json() -> None:
    outcome = check(b'{"id": "a", "text": "x\x01y"}')
    assert isinstance(outcome, Rejection) and outcome.type == "invalid_json"


def nested(depth: int) -> dict:
    meta: dict = {}
    for _ in range(depth - 1):
        meta = {"n": meta}
    return meta


@pytest.mark.parametrize("depth", [1, 5, MAX_META_DEPTH])
def test_meta_up_to_the_depth_limit_is_kept(depth: int) -> None:
    message = check(orjson.dumps({"id": "a", "text": "x", "meta": nested(depth)}))
    assert isinstance(message, InputMessage)
    assert nesting_depth(message.meta, 100) == depth


@pytest.mark.parametrize("depth", [MAX_META_DEPTH + 1, 254, 300])
def test_meta_deeper_than_the_limit_is_rejected(depth: int) -> None:
    value = b'{"id": "a", "text": "x", "meta": ' + b'{"n": ' * (depth - 1) + b"{}" + b"}" * depth
    outcome = check(value)
    assert outcome == Rejection(
        "invalid_field", f"meta: Value error, nested deeper than {MAX_META_DEPTH} levels"
    )


def test_json_deeper_than_the_parser_allows_is_invalid_json() -> None:
    outcome = check(b"[" * 1100 + b"]" * 1100)
    assert isinstance(outcome, Rejection) and outcome.type == "invalid_json"
    assert "depth" in outcome.detail


@pytest.mark.parametrize("ts", [10**20, -(10**20), 1e300])
def test_out_of_range_epoch_is_invalid_field(ts: float) -> None:
    outcome = check(json.dumps({"id": "a", "text": "x", "ts": ts}).encode())
    assert isinstance(outcome, Rejection) and outcome.type == "invalid_field"
    assert "ts" in outcome.detail and "out of range" in outcome.detail


def test_nesting_depth() -> None:
    assert nesting_depth(1, 5) == 0
    assert nesting_depth({}, 5) == 1
    assert nesting_depth({"a": [1, {"b": []}]}, 5) == 4
    assert nesting_depth(nested(50), 10) == 11


def test_generated_corpus_gets_exactly_the_expected_reasons() -> None:
    """The integration corpus, checked here against `validate` alone (no broker): every case
    gets its reason and detail, every kind is present and (key, value) pairs are unique."""
    corpus = generate(1200)
    assert len({(case.key, case.value) for case in corpus}) == len(corpus)
    assert len({case.kind for case in corpus}) == 12
    for case in corpus:
        raw = RawMessage("news.raw", 0, 1, case.key, case.value, 1_700_000_000.0)
        outcome = validate(raw, max_bytes=MAX_MESSAGE_BYTES, max_text_chars=20_000)
        assert isinstance(outcome, Rejection), case
        assert outcome.type == case.reason, (case.kind, outcome)
        assert case.detail in outcome.detail, (case.kind, outcome)
