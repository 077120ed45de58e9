"""Malformed inputs of different kinds, each with the dead-letter reason it must get."""

from __future__ import annotations

import orjson

MALFORMED: list[tuple[bytes | None, str]] = [
    (b'{"id": "x1", "text": ', "invalid_json"),
    (b"not json at all", "invalid_json"),
    (b'{"id": "x3", "text": "caf\xe9 cr\xe8me"}', "invalid_utf8"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"42", "not_an_object"),
    (b'{"id": "x7"}', "missing_field"),
    (b'{"text": "a text without any id and no key"}', "missing_field"),
    (b'{"id": "x9", "text": ""}', "invalid_field"),
    (b'{"id": "x10", "text": "   \\n\\t "}', "invalid_field"),
    (b'{"id": 11, "text": "numeric id"}', "invalid_field"),
    (b'{"id": "x12", "text": ["a", "list"]}', "invalid_field"),
    (b'{"id": "x13", "text": null}', "invalid_field"),
    (b'{"id": "x14", "text": "ok", "meta": "not an object"}', "invalid_field"),
    (b'{"id": "x15", "text": "ok", "ts": "last tuesday"}', "invalid_field"),
    (orjson.dumps({"id": "x16", "text": "word " * 5000}), "text_too_long"),
    (orjson.dumps({"id": "x17", "text": "z" * 70_000}), "message_too_large"),
    (b"", "empty_message"),
    (orjson.dumps({"id": "x" * 600, "text": "id too long"}), "invalid_field"),
    (b'{"id": "x20", "text": "ok", "title": 7}', "invalid_field"),
]
