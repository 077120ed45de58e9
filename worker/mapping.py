"""The producer's own message shape, per route: where the text, title and id are.

Kafka Connect users know this remapping from SMTs such as `ExtractField` and `ValueToKey`. A
route's mapping turns one decoded value into the canonical fields of `InputMessage`, or names
the pointer that the message misses. The default mapping (`/id`, `/text`, `/title`, `meta`
passed through) is today's schema, taken as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonpointer import EndOfList, JsonPointer

from worker.messages import RawMessage
from worker.settings import Route

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Missing:
    """The message lacks what its route's mapping points at (a `Rejection` to validation)."""

    detail: str
    reason: str = "missing_field"


def _resolve(pointer: JsonPointer, document: Any) -> Any:
    """The value at `pointer`, or `_MISSING`; `/-` (past an array's end) is missing too."""
    value = pointer.resolve(document, _MISSING)
    return _MISSING if isinstance(value, EndOfList) else value


def _compile(pointer: str | None) -> JsonPointer | None:
    return None if pointer is None else JsonPointer(pointer)


class Mapping:
    """One route's mapping, with its pointers compiled once."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.value_format = route.value_format
        self.default = (
            route.value_format == "json"
            and (route.id_field, route.text_field, route.title_field) == ("/id", "/text", "/title")
            and route.keep_input is None
        )
        self._text = JsonPointer(route.text_field)
        self._title = _compile(route.title_field)
        self._id = JsonPointer(route.id_field)
        # Only a list holds pointers: iterating keep_input="none" used to compile "n", "o", ...
        # and crash on the first (not a JSON pointer), so no route could say keep_input=none.
        keep = route.keep_input if isinstance(route.keep_input, list) else []
        self._keep = [JsonPointer(p) for p in keep]
        self.names = {"id": route.id_field, "text": route.text_field, "title": route.title_field}
        """Canonical field -> the pointer it came from, for error details."""

    def from_json(self, raw: RawMessage, payload: dict[str, Any]) -> dict[str, Any] | Missing:
        """The canonical fields of a JSON object message."""
        if self.default:
            fields = payload
        else:
            text = _resolve(self._text, payload)
            if text is _MISSING:
                return Missing(f"no value at {self.route.text_field} (text_field)")
            fields = {"text": text, "meta": self._meta(payload)}
            title = _resolve(self._title, payload) if self._title is not None else _MISSING
            if title is not _MISSING and title is not None:
                fields["title"] = title
        return self._with_id(raw, fields, payload)

    def from_text(self, raw: RawMessage, text: str) -> dict[str, Any] | Missing:
        """The canonical fields of a plain-text message: the whole value is the text."""
        meta = {"text": text} if self.route.keep_input == "all" else None
        return self._with_id(raw, {"text": text, "meta": meta}, None)

    def _meta(self, payload: dict[str, Any]) -> Any:
        keep = self.route.keep_input
        if keep is None:
            return payload.get("meta")
        if keep == "none":
            return None
        if keep == "all":
            return payload
        found = {p.path: _resolve(p, payload) for p in self._keep}
        return {path: value for path, value in found.items() if value is not _MISSING} or None

    def _with_id(
        self, raw: RawMessage, fields: dict[str, Any], payload: dict[str, Any] | None
    ) -> dict[str, Any] | Missing:
        how = self.route.id_from
        if how == "coordinates":
            identity: Any = f"{raw.topic}-{raw.partition}-{raw.offset}"
        elif how == "field" and payload is not None:
            identity = _resolve(self._id, payload)
            if identity is _MISSING:
                if not raw.key:
                    return Missing(f"no value at {self.route.id_field} (id_field) and no key")
                identity = raw.key
        elif not raw.key:
            return Missing("message has no key (id_from=key)")
        else:
            identity = raw.key
        if isinstance(identity, bytes):
            try:
                identity = identity.decode("utf-8")
            except UnicodeDecodeError:
                return Missing("message has no id and its key is not UTF-8", "invalid_utf8")
        fields["id"] = identity
        return fields


DEFAULT_MAPPING = Mapping(Route(source="<default>", model="<default>", sink="<default>"))
"""Today's schema: `/id` (else the key), `/text`, `/title`, and `meta` passed through."""
