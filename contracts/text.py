"""The one text normalisation that training and serving share: what the model reads.

Scraped text carries control characters that are not a reason to refuse a message:
- C1 characters U+0080-U+009F are nearly always Windows-1252 bytes decoded as Latin-1
  (U+0096 is cp1252's en dash, U+0092 its right quote); they are repaired to what cp1252 meant.
- Every other control character (C0 other than tab, line feed and carriage return; DEL; the five
  C1 code points cp1252 leaves undefined) becomes a space.
"""

from __future__ import annotations

import re


def _c1_repair(code: int) -> str:
    try:
        return bytes([code]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252
        return " "


_TABLE: dict[int, str] = {
    **{code: " " for code in range(0x20) if chr(code) not in "\t\n\r"},
    0x7F: " ",
    **{code: _c1_repair(code) for code in range(0x80, 0xA0)},
}
_NEEDS_WORK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """`text` with C1 mojibake repaired and other control characters as spaces."""
    if _NEEDS_WORK.search(text) is None:  # the common case costs one scan, no copy
        return text
    return text.translate(_TABLE)


def model_text(text: str, title: str | None = None) -> str:
    """What the classifier reads: the normalised title, when there is one, joined to the text.

    The trainer builds its rows with this function too, so training and serving see one input.
    """
    title = normalize_text(title or "").strip()
    text = normalize_text(text)
    return f"{title}. {text}" if title else text
