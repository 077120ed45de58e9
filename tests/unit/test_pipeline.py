"""Routing and labelling through `Pipeline` with a fake classifier (no Kafka, no Triton)."""

import numpy as np
import orjson
import pytest

from worker.inference import Classification, InferenceRejected
from worker.messages import RawMessage
from worker.pipeline import Pipeline
from worker.settings import Route, WorkerSettings

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


class FakeClassifier:
    def __init__(self, poison: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.poison = poison

    async def classify(self, model: str, texts: list[str]) -> Classification:
        self.calls.append(texts)
        if self.poison and self.poison in texts:
            raise InferenceRejected("bad text")
        probs = np.full((len(texts), 4), 0.1, dtype=np.float32)
        probs[:, 1] = 0.7
        return Classification(model=model, version="3", labels=LABELS, probs=probs)


def settings(**overrides) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **{"max_batch": 2, **overrides})


def message(i: int, text: str = "some news") -> RawMessage:
    value = orjson.dumps({"id": f"m{i}", "text": text, "meta": {"n": i}})
    return RawMessage("news.raw", 1, 100 + i, f"m{i}".encode(), value, 1_700_000_000.0)


ROUTE = Route(source="news.raw", model="news_topic", sink="news.labelled")


async def test_every_message_yields_one_record_in_order():
    fake = FakeClassifier()
    pipeline = Pipeline(ROUTE, fake, settings())
    batch = [message(0), RawMessage("news.raw", 1, 50, None, b"{oops", 0.0), message(1), message(2)]
    result = await pipeline.process(batch)

    assert [r.topic for r in result.records] == [
        "news.labelled",
        "labelstream.deadletter",
        "news.labelled",
        "news.labelled",
    ]
    assert result.labelled == 3 and result.rejected == 1 and result.versions == {"3"}
    # max_batch=2 bounds each Triton request
    assert [len(c) for c in fake.calls] == [2, 1]

    out = orjson.loads(result.records[0].value)
    assert result.records[0].key == b"m0"
    assert out["label"] == "Sports"
    assert out["confidence"] == pytest.approx(0.7)
    assert out["model"] == {"name": "news_topic", "version": "3"}
    assert out["meta"] == {"n": 0}
    assert set(out["scores"]) == set(LABELS)

    dead = orjson.loads(result.records[1].value)
    assert dead["error"]["type"] == "invalid_json"
    assert (dead["topic"], dead["partition"], dead["offset"]) == ("news.raw", 1, 50)
    assert dead["value_b64"] == "e29vcHM="


async def test_rejected_batch_is_bisected_to_the_poison_message():
    fake = FakeClassifier(poison="poison")
    pipeline = Pipeline(ROUTE, fake, settings(max_batch=8))
    batch = [message(0), message(1, "poison"), message(2), message(3)]
    result = await pipeline.process(batch)
    kinds = [orjson.loads(r.value).get("error", {}).get("type") for r in result.records]
    assert kinds == [None, "inference_rejected", None, None]
    assert result.labelled == 3 and result.rejected == 1


async def test_routes_from_settings_env(monkeypatch):
    monkeypatch.setenv("ROUTES", '[{"source": "a.raw", "model": "m", "sink": "a.out"}]')
    assert WorkerSettings(_env_file=None).routes == [Route(source="a.raw", model="m", sink="a.out")]
