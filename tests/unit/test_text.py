"""The shared normalisation: expected strings written out by hand (the cp1252 table, AG News
rows), properties checked with hypothesis, and the one function training and serving share."""

import time

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import text as text_module
from contracts.text import model_text, normalize_text
from trainer.data import read_examples
from worker.inference import Classification
from worker.messages import RawMessage
from worker.pipeline import Pipeline
from worker.settings import Route, WorkerSettings

NEWS = ["World", "Sports", "Business", "Sci/Tech"]


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


# --- HTML debris, AG News's broken entities and backslashes -----------------------------------
# Rows copied from /work/shared/data/ag_news/train.tsv (shortened where long).
AG_NEWS_ROWS = [
    (
        "It #39;s over. Our relationship just hasn #39;t been working for a while, and now, "
        "this is it. I #39;m leaving you for another browser.",
        "It's over. Our relationship just hasn't been working for a while, and now, "
        "this is it. I'm leaving you for another browser.",
    ),
    (
        "also announced  quot;the industry #39;s first quot; Gigabit Ethernet-enabled IP phone.",
        'also announced "the industry\'s first" Gigabit Ethernet-enabled IP phone.',
    ),
    (
        "quot;The ability to watch TV-like content on a mobile phone is a natural next step",
        '"The ability to watch TV-like content on a mobile phone is a natural next step',
    ),
    (
        "Johnson  amp; Johnson said Wednesday night that it would acquire Indianapolis-based "
        "medical device manufacturer Guidant Corp. for \\$25.4 billion.",
        "Johnson & Johnson said Wednesday night that it would acquire Indianapolis-based "
        "medical device manufacturer Guidant Corp. for $25.4 billion.",
    ),
    (
        "is available for users of the new AT amp;T Wireless based Audiovox SMT5600 Smartphone.",
        "is available for users of the new AT&T Wireless based Audiovox SMT5600 Smartphone.",
    ),
    (
        "Reuters - The Houston Rockets exercised\\the fourth-year option on center Yao Ming's "
        "contract on\\Thursday.",
        "Reuters - The Houston Rockets exercised the fourth-year option on center Yao Ming's "
        "contract on Thursday.",
    ),
    (
        "South Korea's Internet Auction Co. Ltd.\\for about  #36;41.1 million in cash.",
        "South Korea's Internet Auction Co. Ltd. for about $41.1 million in cash.",
    ),
    (
        "AP - TiVo Inc. pioneered digital video recording as a new way of watching television  "
        "#151; when you want it.",
        "AP - TiVo Inc. pioneered digital video recording as a new way of watching television "
        "\u2014 when you want it.",
    ),
    (
        "Yahoo Goes Mobile with Search and Images\\\\Yahoo yesterday unveiled their latest weapon",
        "Yahoo Goes Mobile with Search and Images Yahoo yesterday unveiled their latest weapon",
    ),
    ("pictures of CompUSA   hellip;. Vodafone", "pictures of CompUSA  \u2026. Vodafone"),
    (  # SST-2 dev escapes its slashes
        "writer\\/director joe carnahan 's grimy crime drama",
        "writer/director joe carnahan 's grimy crime drama",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), AG_NEWS_ROWS)
def test_ag_news_debris_is_cleaned(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected_words"),
    [
        (  # real entities around a Reuters ticker link: the tag goes, its text stays
            'Kimberly-Clark Corp. &lt;A HREF="http://www.investor.reuters.com/FullQuote.aspx?'
            'ticker=KMB.N target=/stocks/quickinfo/fullquote"&gt;KMB.N&lt;/A&gt; said on  Monday',
            "Kimberly-Clark Corp. KMB.N said on Monday",
        ),
        (
            "&lt;p&gt;\\&lt;/p&gt;&lt;p&gt; LONDON (Reuters) - Oil prices eased further on "
            "Tuesday, as\\the head of OPEC",
            "LONDON (Reuters) - Oil prices eased further on Tuesday, as the head of OPEC",
        ),
        (
            "slow to adapt to changes in the market in recent years.&lt;br&gt;&lt;FONT "
            'face="verdana,MS Sans Serif,arial,helvetica" size="-2"\\ color="#666666"&gt;'
            "&lt;B&gt;-Ellen McCarthy&lt;/B&gt;&lt;/FONT&gt;",
            "slow to adapt to changes in the market in recent years. -Ellen McCarthy",
        ),
    ],
)
def test_html_tags_become_spaces(raw: str, expected_words: str) -> None:
    assert " ".join(normalize_text(raw).split()) == expected_words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Q&amp;A &#39;x&#39; &quot;y&quot; a &lt; b", "Q&A 'x' \"y\" a < b"),
        ("double &amp;quot;escaped&amp;quot; &amp;amp;", 'double "escaped" &'),
        ("R&D, AT&T, Barnes & Noble; fine", "R&D, AT&T, Barnes & Noble; fine"),
        ("&notation &copy2024 &regulation", "&notation &copy2024 &regulation"),  # need ';'
        ("unknown &foo; and &#108; stay", "unknown &foo; and &#108; stay"),  # letters stay
        ("bolt; Lt; lt;", "bolt; Lt;<"),  # "&"-less: a known name, not inside a word
        ("1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
    ],
)
def test_references_are_decoded_only_where_unambiguous(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "clean", ["Stocks rally on rate cut hopes", "caf\u00e9 \u2013 3 > 2 #1 (50%)", "a\tb\nc"]
)
def test_clean_text_costs_no_copy(clean: str) -> None:
    assert normalize_text(clean) is clean


# fmt: off
PIECES = [
    "&", "amp;", "AMP;", "#38;", "#x26;", "#39;", "#108;", "#1;", "#10;", "quot;", "lt;", "gt;",
    "&lt;", "&gt;", "eacute;", "fjlig;", "notx;", "<", ">", "</", "b", "a", "x", " ", "  ", "\\",
    "$", "/", ";", "#", "\u0096", "\u0000", "\u00e9", "1",
]
# fmt: on


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=24).map("".join))
def test_cleanup_is_idempotent_on_entity_like_text(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text()))
def test_model_text_never_raises_and_is_idempotent(text: str, title: str | None) -> None:
    once = normalize_text(text)
    assert isinstance(once, str) and normalize_text(once) == once
    model_text(text, title)


@pytest.mark.parametrize(
    "hostile", ["&amp;" * 20_000, "<a" * 30_000, " #38;" * 20_000, "\\" * 60_000, "quot;" * 20_000]
)
def test_hostile_input_is_cleaned_in_linear_time(hostile: str) -> None:
    started = time.perf_counter()
    normalize_text(hostile)
    assert time.perf_counter() - started < 0.5


# --- one function for training and serving ----------------------------------------------------


class _Recorder:
    """A stand-in classifier that records the texts the worker sends to Triton."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def classify(
        self, model: str, texts: list[str], version: str | None = None, *, retry: bool = True
    ) -> Classification:
        self.texts.extend(texts)
        probs = np.full((len(texts), 4), 0.25, dtype=np.float32)
        return Classification(model=model, version="1", labels=NEWS, probs=probs)


async def test_served_and_trained_text_go_through_the_same_function(tmp_path, monkeypatch):
    """The worker's text for Triton and the trainer's training text are one function's output
    (a spy on `normalize_text` sees both) and equal for the same raw AG News row."""
    seen: list[str] = []
    real = text_module.normalize_text
    monkeypatch.setattr(text_module, "normalize_text", lambda text: seen.append(text) or real(text))
    raw = AG_NEWS_ROWS[1][0]
    data = tmp_path / "news.tsv"
    data.write_text(f"text\tlabel\n{raw}\tWorld\nother text\tSports\n", encoding="utf-8")
    trained = read_examples(data, NEWS)[0].text

    recorder = _Recorder()
    pipeline = Pipeline(
        Route(source="news.raw", model="news_topic", sink="news.labelled"),
        recorder,
        WorkerSettings(_env_file=None),
    )
    value = orjson.dumps({"id": "m1", "text": raw})
    await pipeline.process([RawMessage("news.raw", 0, 1, b"m1", value, 1_700_000_000.0)])

    assert recorder.texts == [trained] == [AG_NEWS_ROWS[1][1]]
    assert seen.count(raw) >= 2  # once for the training row, at least once for the message
