"""Output records: headers carried and added, dead letters cut to fit the request limit."""

import base64
from datetime import UTC, datetime

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.labelling import dead_letter_record, labelled_record, record_size, score_rows
from worker.messages import RawMessage
from worker.schemas import InputMessage, LabelledRecord, ModelRef, TruncatedMessage
from worker.validation import Rejection

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = (
    ("traceparent", TRACE),
    ("x-tag", b"a"),
    ("X-Secret", b"hunter2"),
    ("x-tag", b"b"),
    ("content-type", b"text/plain"),
    ("labelstream-version", b"99"),
)


def raw(value: bytes, headers=HEADERS) -> RawMessage:
    return RawMessage("news.raw", 2, 41, b"k-1", value, 1_764_676_800.0, headers)


def labelled(message: InputMessage, drop=()):
    values, scores = score_rows(np.array([[0.1, 0.7, 0.1, 0.1]], dtype=np.float32))
    return labelled_record(
        raw(b"{}"),
        message,
        sink="news.labelled",
        model="news_topic",
        version="3",
        labels=["World", "Sports", "Business", "Sci/Tech"],
        probs=values[0],
        scores=scores[0],
        now=NOW,
        drop_headers=drop,
    )


def test_labelled_record_carries_input_headers_in_order_and_its_own():
    record = labelled(InputMessage(id="k-1", text="goal"), drop={"x-secret"})
    assert record.headers == (
        ("traceparent", TRACE),
        ("x-tag", b"a"),
        ("x-tag", b"b"),
        ("content-type", b"application/json"),
        ("labelstream-model", b"news_topic"),
        ("labelstream-version", b"3"),
    )
    body = orjson.loads(record.value)
    assert body["truncated"] is False and body["label"] == "Sports"


def test_drop_names_match_any_case():
    record = labelled(InputMessage(id="k-1", text="goal"), drop={"X-SECRET", "Traceparent"})
    names = [name for name, _ in record.headers]
    assert "X-Secret" not in names and "traceparent" not in names


def test_dead_letter_keeps_every_original_header_in_its_body():
    record = dead_letter_record(
        raw(b"not json"), Rejection("invalid_json", "x"), topic="dl", now=NOW
    )
    body = orjson.loads(record.value)
    assert body["headers"] == [[n, base64.b64encode(v).decode()] for n, v in HEADERS]
    assert ("content-type", b"application/json") in record.headers
    assert ("traceparent", TRACE) in record.headers
    assert base64.b64decode(body["value_b64"]) == b"not json"
    assert body["value_size"] == 8 and body["value_truncated"] is False


def test_900_kb_dead_letter_is_cut_to_fit_the_limit():
    value = b'{"id": "big", "text": "' + b"word " * 180_000 + b'"}'
    record = dead_letter_record(
        raw(value), Rejection("message_too_large", "x"), topic="dl", now=NOW, max_bytes=1_000_000
    )
    assert record_size(record.key, record.value, record.headers) <= 1_000_000
    body = orjson.loads(record.value)
    kept = base64.b64decode(body["value_b64"])
    assert body["value_truncated"] is True and body["value_size"] == len(value)
    assert value.startswith(kept) and len(kept) > 700_000


@settings(max_examples=200, deadline=None)
@given(
    probs=st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=2, max_size=6).map(
        lambda p: np.array(p, dtype=np.float32)
    ),
    ts=st.floats(0.0, 4_000_000_000.0),
    micros=st.integers(0, 999_999),
    meta=st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)),
    truncated=st.booleans(),
)
def test_labelled_value_is_byte_for_byte_the_schema_models(probs, ts, micros, meta, truncated):
    """The record is built as a plain dict for speed; its bytes must stay exactly what the
    `LabelledRecord` model (the documented schema) serialises."""
    labels = [f"label-{i}" for i in range(len(probs))]
    now = datetime(2026, 12, 2, 12, 0, 0, micros, tzinfo=UTC)
    values, scores = score_rows(probs[None, :])
    message = (TruncatedMessage if truncated else InputMessage)(id="m-1", text="t", meta=meta)
    record = labelled_record(
        RawMessage("news.raw", 0, 1, b"k", b"{}", ts),
        message,
        sink="s",
        model="news_topic",
        version="2",
        labels=labels,
        probs=values[0],
        scores=scores[0],
        now=now,
    )
    best = int(np.argmax(probs))
    ts_in = datetime.fromtimestamp(ts, tz=UTC)
    expected = LabelledRecord(
        id="m-1",
        label=labels[best],
        confidence=float(probs[best]),
        scores={label: round(float(p), 6) for label, p in zip(labels, probs, strict=True)},
        model=ModelRef(name="news_topic", version="2"),
        ts_in=ts_in,
        ts_out=now,
        latency_ms=round((now - ts_in).total_seconds() * 1000.0, 3),
        truncated=truncated,
        meta=meta,
    )
    assert record.value == orjson.dumps(expected.model_dump(mode="json"))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=3, max_size=3),
        min_size=1,
        max_size=8,
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_score_rows_round_exactly_as_python_does(rows, dtype):
    probs = np.array(rows, dtype=dtype)
    values, rounded = score_rows(probs)
    assert values == [[float(p) for p in row] for row in probs]
    assert rounded == [[round(float(p), 6) for p in row] for row in probs]


def test_float32_scores_on_rounding_ties_round_half_even_like_python():
    # 0.0000005 and friends as float32 sit next to (not on) the decimal tie: exactness matters
    probs = np.array([[5e-7, 1.5e-6, 2.5e-6, 0.1234565, 0.9999995]], dtype=np.float32)
    assert score_rows(probs)[1] == [[round(float(p), 6) for p in probs[0]]]
