"""Per-route message shapes (`worker/mapping.py`) through `validate`, with hand-written inputs."""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from worker.mapping import Mapping
from worker.messages import RawMessage
from worker.schemas import InputMessage
from worker.settings import Route
from worker.validation import REASONS, Rejection, validate


def route(**shape) -> Route:
    return Route(source="shop.raw", model="review_sentiment", sink="shop.labelled", **shape)


def raw(value: bytes | None, key: bytes | None = None, offset: int = 42) -> RawMessage:
    return RawMessage("shop.raw", 3, offset, key, value, 1_700_000_000.0)


def check(value, key: bytes | None = None, **shape) -> InputMessage | Rejection:
    data = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return validate(
        raw(data, key), max_bytes=10_000, max_text_chars=1_000, mapping=Mapping(route(**shape))
    )


REVIEW = {"review": {"content": "Great kettle", "headline": "Five stars"}, "sku": 7}


def test_nested_pointers() -> None:
    msg = check(
        {**REVIEW, "order": {"ref": "o-1"}},
        text_field="/review/content",
        title_field="/review/headline",
        id_field="/order/ref",
    )
    assert isinstance(msg, InputMessage)
    assert (msg.id, msg.text, msg.title, msg.meta) == ("o-1", "Great kettle", "Five stars", None)


def test_missing_text_names_the_pointer() -> None:
    got = check({"review": {"body": "x"}, "id": "a"}, text_field="/review/content")
    assert got == Rejection("missing_field", "no value at /review/content (text_field)")


def test_missing_title_is_fine() -> None:
    msg = check({"id": "a", "review": {"content": "ok"}}, text_field="/review/content")
    assert isinstance(msg, InputMessage) and msg.title is None


def test_pointer_escapes() -> None:
    # RFC 6901: ~1 is "/", ~0 is "~"
    payload = {"a/b": "slash text", "m~n": "tilde title", "id": "e1"}
    msg = check(payload, text_field="/a~1b", title_field="/m~0n")
    assert isinstance(msg, InputMessage)
    assert (msg.text, msg.title) == ("slash text", "tilde title")


def test_array_index_pointer() -> None:
    payload = {"id": "x", "items": [{"body": "first"}, {"body": "second"}]}
    msg = check(payload, text_field="/items/0/body")
    assert isinstance(msg, InputMessage) and msg.text == "first"
    got = check({"id": "x", "items": []}, text_field="/items/0/body")
    assert got == Rejection("missing_field", "no value at /items/0/body (text_field)")


def test_uuid_id_field() -> None:
    ident = str(uuid.UUID("12345678-1234-5678-1234-567812345678"))
    msg = check({"uuid": ident, "body": "hi"}, text_field="/body", id_field="/uuid")
    assert isinstance(msg, InputMessage) and msg.id == ident


def test_id_field_falls_back_to_the_key() -> None:
    msg = check({"body": "hi"}, key=b"k-9", text_field="/body", id_field="/uuid")
    assert isinstance(msg, InputMessage) and msg.id == "k-9"
    got = check({"body": "hi"}, text_field="/body", id_field="/uuid")
    assert got == Rejection("missing_field", "no value at /uuid (id_field) and no key")


def test_id_from_key_ignores_the_field() -> None:
    msg = check({"id": "field-id", "text": "hi"}, key=b"key-id", id_from="key")
    assert isinstance(msg, InputMessage) and msg.id == "key-id"
    got = check({"id": "field-id", "text": "hi"}, id_from="key")
    assert got == Rejection("missing_field", "message has no key (id_from=key)")
    got = check({"text": "hi"}, key=b"\xff\xfe", id_from="key")
    assert isinstance(got, Rejection) and got.type == "invalid_utf8"


def test_id_from_coordinates() -> None:
    msg = check({"text": "hi", "id": "ignored"}, key=b"k", id_from="coordinates")
    assert isinstance(msg, InputMessage) and msg.id == "shop.raw-3-42"


def test_integer_id_is_a_decimal_string() -> None:
    msg = check({"body": "hi", "n": 123456789012}, text_field="/body", id_field="/n")
    assert isinstance(msg, InputMessage) and msg.id == "123456789012"


def test_plain_text_values() -> None:
    msg = check("Grüße aus Köln".encode(), key=b"k1", value_format="text", id_from="key")
    assert isinstance(msg, InputMessage)
    assert (msg.id, msg.text, msg.title, msg.meta) == ("k1", "Grüße aus Köln", None, None)
    # a JSON-looking text value is still just text
    msg = check(b'{"text": "x"}', key=b"k1", value_format="text", id_from="key")
    assert isinstance(msg, InputMessage) and msg.text == '{"text": "x"}'
    msg = check(b"hello", value_format="text", id_from="coordinates", keep_input="all")
    assert isinstance(msg, InputMessage)
    assert (msg.id, msg.meta) == ("shop.raw-3-42", {"text": "hello"})


def test_plain_text_rejections() -> None:
    shape = {"value_format": "text", "id_from": "key"}
    got = check(b"caf\xe9", key=b"k", **shape)  # Latin-1, not UTF-8
    assert got == Rejection("invalid_utf8", "byte 3: unexpected end of data")
    assert check(b"", key=b"k", **shape) == Rejection("empty_message", "message value is empty")
    assert check(None, key=b"k", **shape) == Rejection("empty_message", "message value is empty")
    got = check(b"   ", key=b"k", **shape)
    assert isinstance(got, Rejection) and got.type == "invalid_field" and "blank" in got.detail
    got = check(b"hello", **shape)
    assert got == Rejection("missing_field", "message has no key (id_from=key)")


PAYLOAD = {
    "id": "p1",
    "body": "text here",
    "meta": {"from": "meta"},
    "user": {"name": "ann", "age": 30},
    "tags": ["a", "b"],
}


@pytest.mark.parametrize(
    ("keep", "meta"),
    [
        (None, {"from": "meta"}),  # default: the input's own /meta
        ("none", None),
        ("all", PAYLOAD),
        (["/user/name", "/tags/1"], {"/user/name": "ann", "/tags/1": "b"}),
        (["/user/name", "/nowhere"], {"/user/name": "ann"}),  # a missing pointer is left out
        (["/nowhere"], None),  # nothing found: no meta
    ],
)
def test_keep_input(keep, meta) -> None:
    msg = check(PAYLOAD, text_field="/body", keep_input=keep)
    assert isinstance(msg, InputMessage)
    assert msg.meta == meta and msg.text == "text here" and msg.id == "p1"


def test_default_mapping_keeps_todays_schema() -> None:
    assert Mapping(route()).default
    assert not Mapping(route(keep_input="none")).default
    msg = check({"id": "d", "text": "t", "title": "T", "lang": "en", "meta": {"k": 1}})
    assert isinstance(msg, InputMessage)
    assert (msg.id, msg.text, msg.title, msg.lang, msg.meta) == ("d", "t", "T", "en", {"k": 1})


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"id": "a", "review": {"content": 5}}, "text (/review/content)"),
        ({"id": "a", "review": {"content": "ok", "headline": ["x"]}}, "title (/review/headline)"),
        ({"ref": 1.5, "review": {"content": "ok"}}, "id (/ref)"),
    ],
)
def test_wrong_type_names_the_pointer(payload, pointer) -> None:
    id_field = "/ref" if "ref" in payload else "/id"
    got = check(
        payload, text_field="/review/content", title_field="/review/headline", id_field=id_field
    )
    assert isinstance(got, Rejection) and got.type == "invalid_field"
    assert got.detail.startswith(f"{pointer}: ")


def test_meta_of_the_wrong_type() -> None:
    got = check({"id": "a", "body": "ok", "meta": "not an object"}, text_field="/body")
    assert isinstance(got, Rejection) and got.type == "invalid_field"
    assert got.detail.startswith("meta: ")


def test_route_errors() -> None:
    with pytest.raises(ValidationError, match="is not a JSON pointer"):
        route(text_field="review/content")
    with pytest.raises(ValidationError, match="is not a JSON pointer"):
        route(keep_input=["/ok", "bad"])
    with pytest.raises(ValidationError, match="set id_from to key or coordinates"):
        route(value_format="text")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        route(text_pointer="/x")
    with pytest.raises(ValidationError):
        route(id_from="header")
    with pytest.raises(ValidationError):
        route(value_format="avro", id_from="key")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["text", "body", "a", "items", "0", "id", "meta", "a/b"])
objects = st.dictionaries(keys, json_values | st.dictionaries(keys, json_values, max_size=3))
SHAPES = [
    route(text_field="/body", title_field="/a", id_field="/id", keep_input=["/a", "/items/0"]),
    route(text_field="/items/0", title_field=None, id_from="coordinates", keep_input="all"),
    route(text_field="/a/body", id_field="/a/id", keep_input="none"),
    route(text_field="/a~1b", id_field="/0", id_from="field"),
    route(),
]


@settings(max_examples=150, deadline=None)
@given(objects, st.sampled_from(SHAPES), st.one_of(st.none(), st.binary(max_size=4)))
def test_fuzz_any_object_any_mapping(payload, shape, key) -> None:
    got = validate(
        raw(orjson.dumps(payload), key),
        max_bytes=100_000,
        max_text_chars=50,
        mapping=Mapping(shape),
    )
    if isinstance(got, Rejection):
        assert got.type in REASONS
    else:
        assert isinstance(got, InputMessage) and got.id and got.text
