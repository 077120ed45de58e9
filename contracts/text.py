"""The one text normalisation that training and serving share: what the model reads.

Scraped text carries debris that is not a reason to refuse a message:
- C1 characters U+0080-U+009F are nearly always Windows-1252 bytes decoded as Latin-1
  (U+0096 is cp1252's en dash, U+0092 its right quote); they are repaired to what cp1252 meant.
- Every other control character (C0 other than tab, line feed and carriage return; DEL; the five
  C1 code points cp1252 leaves undefined) becomes a space.
- HTML character references are decoded (`&amp;`, `&#39;`, `&lt;`, also double-escaped
  `&amp;quot;`), and so are the '&'-less ones AG News is full of (`It #39;s`, `quot;Go quot;`,
  `AT amp;T`): its source replaced '&' by a space, so that one space is dropped with it.
- HTML tags (`<br>`, `<A HREF="...">`, mostly decoded from `&lt;...&gt;`) become a space, and so
  does an unclosed `<tag` that runs into the next `<`.
- A backslash is AG News's line break (`on\\Thursday`, `Images\\\\Yahoo`): a space; before `$`
  or `/` it is an escape (AG News's `\\$400`, SST-2's `writer\\/director`) and is dropped.

`normalize_text(normalize_text(t)) == normalize_text(t)`: a reference is decoded only when the
result holds no character that could form a new reference (letters, digits, `#`, `;`, spaces or
controls; `&` is fine, as every reference that decodes to `&` is also a `_LINK`, so a
reference right after it would have been part of the same match); backslashes and then tags
become spaces, which join nothing (an escaping backslash is dropped, and joins only `$` or `/`
to what precedes, which forms no reference, and no tag since tags are removed after it).
"""

from __future__ import annotations

import html
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
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Every piece of debris contains one of these; clean text is scanned once and not copied.
_NEEDS_WORK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f&;<\\]")

# Escaped ampersands (every reference that decodes to '&'), chained in front of a reference as in
# `&amp;quot;`: decoded with it in one match.
_LINK = r"(?:amp;|AMP;|#0{0,5}38;|#[xX]0{0,4}26;)"
_NUMERIC = r"#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}"
_ANY = rf"{_NUMERIC}|[A-Za-z][A-Za-z0-9]{{1,31}}"
_REFERENCE = re.compile(
    rf"&(?P<amps>{_LINK}*)(?P<ref>{_ANY});"
    # '&'-less: after the space that replaced '&', or at a start that is not inside a word.
    rf"|(?: |(?<![\w&]))(?:(?P<bare_amps>{_LINK}+)(?P<chained>{_ANY})"
    rf"|(?P<bare>{_NUMERIC}|quot|amp|apos|lt|gt|nbsp|hellip));"
)
# No character that could start, continue or end a reference, or that `_TABLE` would change.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f#;&0-9A-Za-z]")
_TAG = re.compile(r"</?[A-Za-z][^<>]*(?:>|(?=<))")
_BACKSLASH = re.compile(r"\\+([$/]?)")


def _decode(match: re.Match[str]) -> str:
    """The character a reference stands for, where decoding it cannot create a new one."""
    ref = match["ref"] or match["chained"] or match["bare"]
    decoded = html.unescape(f"&{ref};")
    if decoded and (decoded == "&" or _UNSAFE.search(decoded) is None):
        return decoded
    if match["amps"] or match["bare_amps"]:  # only the escaped '&' in front is decoded
        return f"&{ref};"
    return match[0]


def _clean(text: str) -> str:
    """The slow path: each step only where its trigger character occurs."""
    if _CONTROL.search(text) is not None:
        text = text.translate(_TABLE)
    if "&" in text or ";" in text:
        text = _REFERENCE.sub(_decode, text)
    if "\\" in text:  # before tags: `<\/b>` is a tag once its escape is dropped
        text = _BACKSLASH.sub(lambda match: match[1] or " ", text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    return text


def normalize_text(text: str) -> str:
    """`text` with control characters, HTML references and tags, and backslashes cleaned."""
    if _NEEDS_WORK.search(text) is None:  # the common case costs one scan, no copy
        return text
    return _clean(text)


def model_text(text: str, title: str | None = None) -> str:
    """What the classifier reads: the normalised title, when there is one, joined to the text.

    The trainer builds its rows with this function too, so training and serving see one input.
    """
    title = normalize_text(title or "").strip()
    text = normalize_text(text)
    return f"{title}. {text}" if title else text
