"""Malformed inputs of different kinds, each with the dead-letter reason it must get: 20
hand-written cases and a seeded generator of any number more."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from worker.schemas import MAX_META_DEPTH

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
    (b'{"id": 11.5, "text": "fractional id"}', "invalid_field"),
    (b'{"id": "x12", "text": ["a", "list"]}', "invalid_field"),
    (b'{"id": "x13", "text": null}', "invalid_field"),
    (b'{"id": "x14", "text": "ok", "meta": "not an object"}', "invalid_field"),
    (b'{"id": "x15", "text": "ok", "ts": "last tuesday"}', "invalid_field"),
    (b'{"id": "x16", "text": "ok", "lang": 5}', "invalid_field"),
    (orjson.dumps({"id": "x17", "text": "z" * 70_000}), "message_too_large"),
    (b"", "empty_message"),
    (orjson.dumps({"id": "x" * 600, "text": "id too long"}), "invalid_field"),
    (b'{"id": "x20", "text": "ok", "title": 7}', "invalid_field"),
]


@dataclass(frozen=True, slots=True)
class Case:
    """One generated malformed message, the dead-letter reason it must get and a fragment of
    the detail that makes the reason precise."""

    kind: str
    key: bytes | None
    value: bytes
    reason: str
    detail: str = ""


# Default of WorkerSettings (MAX_MESSAGE_BYTES), which the tests run with.
MAX_BYTES = 64 * 1024
_WORDS = [
    "market",
    "vote",
    "team",
    "chip",
    "price",
    "match",
    "storm",
    "deal",
    "film",
    "plot",
    "actor",
    "goal",
    "rate",
    "cloud",
]


def generate(count: int = 1000, seed: int = 7) -> list[Case]:
    """`count` malformed messages of every kind, round-robin over the kinds, seeded.

    Each (key, value) pair is unique, so a dead letter is matched to its case by them. Messages
    that carry an id in the key (all but `missing_id`) are found by key; the rest by value.
    """
    rng = random.Random(seed)
    makers = list(_MAKERS.items())
    cases = []
    for n in range(count):
        kind, make = makers[n % len(makers)]
        key, value, reason, detail = make(rng, n)
        cases.append(Case(kind, key, value, reason, detail))
    return cases


def _text(rng: random.Random, n: int) -> str:
    return f"bad {n}: " + " ".join(rng.choices(_WORDS, k=rng.randint(3, 12)))


def _doc(rng: random.Random, n: int, **fields: object) -> dict:
    return {"id": f"bad-{n}", "text": _text(rng, n), **fields}


def _key(n: int) -> bytes:
    return f"bad-{n}".encode()


def _invalid_json(rng: random.Random, n: int) -> tuple:
    good = orjson.dumps(_doc(rng, n))
    variants = [
        good[: rng.randint(1, len(good) - 1)],  # truncated
        good[:-1] + b",}",  # trailing comma
        good.replace(b'"', b"'"),  # single quotes
        b'{"id": "bad-%d", "text": NaN}' % n,
        b'{"id": "bad-%d", "text": "raw \x01 control"}' % n,
        b'{"id": "bad-%d", "text": "lone \\ud800 surrogate"}' % n,
        b"[" * 1100 + b"]" * 1100,  # deeper than the parser allows
        f"plain words {n} {_text(rng, n)}".encode(),
    ]
    return _key(n), rng.choice(variants), "invalid_json", ""


def _wrong_type(rng: random.Random, n: int) -> tuple:
    field, value = rng.choice(
        [
            ("id", 1.5),
            ("id", True),
            ("id", ["bad", n]),
            ("id", None),
            ("text", n),
            ("text", ["a", "list"]),
            ("text", {"nested": "object"}),
            ("text", None),
            ("text", False),
            ("title", n),
            ("source", ["wire"]),
            ("lang", {"code": "en"}),
            ("meta", "not an object"),
            ("meta", [1, 2, 3]),
            ("meta", n),
            ("ts", True),
            ("ts", {"at": "noon"}),
            ("ts", "last tuesday"),
            ("ts", 10**18),  # epoch milliseconds far past year 9999
        ]
    )
    return _key(n), orjson.dumps(_doc(rng, n, **{field: value})), "invalid_field", field


def _missing_field(rng: random.Random, n: int) -> tuple:
    variant = rng.randrange(3)
    if variant == 0:  # no text
        return (
            _key(n),
            orjson.dumps({"id": f"bad-{n}", "title": _text(rng, n)}),
            "missing_field",
            "text",
        )
    if variant == 1:  # no id in the message and no key to take it from
        return None, orjson.dumps({"text": _text(rng, n)}), "missing_field", "id"
    return _key(n), orjson.dumps({"id": f"bad-{n}", "meta": {"n": n}}), "missing_field", "text"


def _empty_text(rng: random.Random, n: int) -> tuple:
    text = rng.choice(["", " ", "   ", "\n", "\t \r\n", "\u2003\u00a0"])
    detail = "at least 1 character" if text == "" else "blank"
    return _key(n), orjson.dumps(_doc(rng, n, text=text)), "invalid_field", detail


def _huge_text(rng: random.Random, n: int) -> tuple:
    """Over the byte limit (a text only over MAX_TEXT_CHARS is labelled from its start)."""
    if rng.random() < 0.5:
        text = "word " * rng.randint(MAX_BYTES // 5 + 1, MAX_BYTES // 4)
    else:  # two bytes a character in UTF-8
        text = "é" * rng.randint(MAX_BYTES // 2 + 1, MAX_BYTES)
    return _key(n), orjson.dumps(_doc(rng, n, text=text)), "message_too_large", "bytes > limit"


def _invalid_utf8(rng: random.Random, n: int) -> tuple:
    bad = rng.choice(
        [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe9 cr\xe8me", b"\xf8\x88"]
    )
    good = orjson.dumps(_doc(rng, n))
    at = good.index(b'"text": "') + 9 if b'"text": "' in good else good.index(b'"text":"') + 8
    at += rng.randint(0, 4)
    return _key(n), good[:at] + bad + good[at:], "invalid_utf8", "byte"


def _control_characters(rng: random.Random, n: int) -> tuple:
    """In ids and tags (in text and title they are normalised, not refused)."""
    char = chr(rng.choice([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x85]))
    field = rng.choice(["id", "id", "source", "lang"])
    doc = _doc(rng, n)
    doc[field] = f"{doc.get(field, 'title')}{char}{n}"
    detail = f"{field}: Value error, control character U+{ord(char):04X}"
    return _key(n), orjson.dumps(doc), "invalid_field", detail


def _deep_meta(rng: random.Random, n: int) -> tuple:
    depth = rng.choice([MAX_META_DEPTH + 1, 64, 200, 255, 300, 1000])
    meta = b'{"n": ' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    value = b'{"id": "bad-%d", "text": "deep %d", "meta": %s}' % (n, n, meta)
    return (
        _key(n),
        value,
        "invalid_field",
        f"meta: Value error, nested deeper than {MAX_META_DEPTH}",
    )


def _not_an_object(rng: random.Random, n: int) -> tuple:
    value = rng.choice([[n, "x"], n, f"just a string {n}", True, None, 2.5])
    return _key(n), orjson.dumps(value), "not_an_object", "top-level JSON is"


def _empty(rng: random.Random, n: int) -> tuple:
    return _key(n), b"", "empty_message", "empty"


def _long_id(rng: random.Random, n: int) -> tuple:
    doc = {"id": f"bad-{n}-" + "i" * rng.randint(520, 2000), "text": _text(rng, n)}
    return _key(n), orjson.dumps(doc), "invalid_field", "id"


def _key_not_utf8(rng: random.Random, n: int) -> tuple:
    key = b"\xff\xfe-bad-" + str(n).encode()
    return key, orjson.dumps({"text": _text(rng, n)}), "invalid_utf8", "key is not UTF-8"


_MAKERS = {
    "invalid_json": _invalid_json,
    "wrong_type": _wrong_type,
    "missing_field": _missing_field,
    "empty_text": _empty_text,
    "huge_text": _huge_text,
    "invalid_utf8": _invalid_utf8,
    "control_characters": _control_characters,
    "deep_meta": _deep_meta,
    "not_an_object": _not_an_object,
    "empty_message": _empty,
    "long_id": _long_id,
    "key_not_utf8": _key_not_utf8,
}
