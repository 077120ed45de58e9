import orjson
import pytest

from worker.messages import RawMessage
from worker.schemas import InputMessage
from worker.validation import Rejection, validate


def raw(value: bytes | None, key: bytes | None = None) -> RawMessage:
    return RawMessage("news.raw", 0, 7, key, value, 1_700_000_000.0)


def check(value: bytes | None, key: bytes | None = None) -> InputMessage | Rejection:
    return validate(raw(value, key), max_bytes=1000, max_text_chars=100)


def test_valid_message_with_all_fields():
    msg = check(
        orjson.dumps(
            {
                "id": "a1",
                "text": "Stocks rally",
                "title": "Markets",
                "source": "wire",
                "lang": "en",
                "ts": "2024-05-01T10:00:00Z",
                "meta": {"k": [1, 2]},
            }
        )
    )
    assert isinstance(msg, InputMessage)
    assert msg.id == "a1" and msg.meta == {"k": [1, 2]}
    assert msg.ts is not None and msg.ts.year == 2024


def test_epoch_millis_timestamp():
    msg = check(orjson.dumps({"id": "a", "text": "x", "ts": 1_700_000_000_000}))
    assert isinstance(msg, InputMessage)
    assert msg.ts is not None and msg.ts.year == 2023


def test_id_taken_from_key_when_missing():
    msg = check(orjson.dumps({"text": "hello"}), key=b"key-9")
    assert isinstance(msg, InputMessage) and msg.id == "key-9"


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (None, "empty_message", "empty"),
        (b"", "empty_message", "empty"),
        (b"x" * 1001, "message_too_large", "1001 bytes"),
        (b'{"id": "a", "text": "caf\xe9"}', "invalid_utf8", "byte"),
        (b'{"id": "a", "text": ', "invalid_json", ""),
        (b"[1, 2]", "not_an_object", "list"),
        (b'"just a string"', "not_an_object", "str"),
        (b'{"id": "a"}', "missing_field", "text"),
        (b'{"text": "no id"}', "missing_field", "id"),
        (b'{"id": "a", "text": ""}', "invalid_field", "text"),
        (b'{"id": "a", "text": "   "}', "invalid_field", "blank"),
        (b'{"id": 5.5, "text": "x"}', "invalid_field", "id"),
        (b'{"id": true, "text": "x"}', "invalid_field", "id"),
        (b'{"id": "a", "text": 42}', "invalid_field", "text"),
        (b'{"id": "a", "text": "x", "meta": [1]}', "invalid_field", "meta"),
        (b'{"id": "a", "text": "x", "ts": "yesterday"}', "invalid_field", "ts"),
        (b'{"id": "a", "text": "x", "ts": true}', "invalid_field", "ts"),
    ],
)
def test_rejections_are_precise(value, kind, fragment):
    outcome = check(value)
    assert isinstance(outcome, Rejection)
    assert outcome.type == kind
    assert fragment in outcome.detail


def test_text_over_char_limit_is_cut_and_flagged():
    message = check(orjson.dumps({"id": "a", "text": "y" * 100 + "z"}))
    assert isinstance(message, InputMessage)
    assert message.text == "y" * 100 and message.truncated


def test_text_at_char_limit_is_whole():
    message = check(orjson.dumps({"id": "a", "text": "y" * 100}))
    assert isinstance(message, InputMessage) and not message.truncated


def test_input_cannot_claim_truncated():
    message = check(orjson.dumps({"id": "a", "text": "short", "truncated": True}))
    assert isinstance(message, InputMessage) and not message.truncated


def test_integer_id_is_its_decimal_string():
    message = check(orjson.dumps({"id": 123, "text": "x"}))
    assert isinstance(message, InputMessage) and message.id == "123"


def test_size_checked_before_parsing():
    # Over the byte limit and not JSON: the size is the reason, no parser ran on it.
    outcome = check(b"\xff" * 2000)
    assert isinstance(outcome, Rejection) and outcome.type == "message_too_large"


def test_a_cut_message_keeps_every_other_field():
    value = {
        "id": "a",
        "text": "y" * 150,
        "title": "t",
        "meta": {"k": [1]},
        "ts": 1_700_000_000_000,
    }
    message = check(orjson.dumps(value))
    whole = InputMessage.model_validate({**value, "text": "y" * 100})
    assert message.truncated and not whole.truncated
    assert message.model_dump() == whole.model_dump()
    assert message.model_fields_set == whole.model_fields_set
