"""The shared normalisation: expected strings written out by hand from the cp1252 table."""

import pytest

from contracts.text import model_text, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pre\u0096war", "pre\u2013war"),  # cp1252 0x96: en dash
        ("a \u0097 b", "a \u2014 b"),  # 0x97: em dash
        ("it\u0092s", "it\u2019s"),  # 0x92: right single quote
        ("\u0093quoted\u0094", "\u201cquoted\u201d"),  # 0x93/0x94: double quotes
        ("\u0091x\u0095", "\u2018x\u2022"),  # 0x91 left quote, 0x95 bullet
        ("wait\u0085", "wait\u2026"),  # 0x85: ellipsis
        ("\u0080100", "\u20ac100"),  # 0x80: euro sign
        ("x\u0081y\u008dz\u009d", "x y z "),  # undefined in cp1252: spaces
        ("back\u0008space", "back space"),
        ("form\u000cfeed", "form feed"),
        ("nul\u0000here", "nul here"),
        ("del\u007f", "del "),
        ("keep\ttab\nand\rbreaks", "keep\ttab\nand\rbreaks"),
        ("caf\u00e9 \u2013 ok", "caf\u00e9 \u2013 ok"),  # already clean: unchanged
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_clean_text_is_returned_as_is() -> None:
    text = "Stocks rally on rate cut hopes"
    assert normalize_text(text) is text


def test_model_text_normalises_title_and_text() -> None:
    assert model_text("a\u0096b", " T\u0092s ") == "T\u2019s. a\u2013b"
    assert model_text("plain") == "plain"
