"""Routing and labelling through `Pipeline` with a fake classifier (no Kafka, no Triton)."""

import asyncio

import numpy as np
import orjson
import pytest

from worker.inference import Classification, InferenceRejected
from worker.messages import RawMessage
from worker.pipeline import BatchResult, Pipeline
from worker.schemas import InputMessage
from worker.settings import Route, WorkerSettings

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


class FakeClassifier:
    def __init__(self, poison: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.versions: list[str | None] = []
        self.poison = poison

    async def classify(
        self, model: str, texts: list[str], version: str | None = None, *, retry: bool = True
    ) -> Classification:
        self.calls.append(texts)
        self.versions.append(version)
        if self.poison and self.poison in texts:
            raise InferenceRejected("bad text")
        probs = np.full((len(texts), 4), 0.1, dtype=np.float32)
        probs[:, 1] = 0.7
        return Classification(model=model, version=version or "3", labels=LABELS, probs=probs)


def settings(**overrides) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **{"triton_batch": 2, **overrides})


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
    # triton_batch=2 bounds each Triton request
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
    pipeline = Pipeline(ROUTE, fake, settings(triton_batch=8))
    batch = [message(0), message(1, "poison"), message(2), message(3)]
    result = await pipeline.process(batch)
    kinds = [orjson.loads(r.value).get("error", {}).get("type") for r in result.records]
    assert kinds == [None, "inference_rejected", None, None]
    assert result.labelled == 3 and result.rejected == 1


async def test_routes_from_settings_env(monkeypatch):
    monkeypatch.setenv("ROUTES", '[{"source": "a.raw", "model": "m", "sink": "a.out"}]')
    assert WorkerSettings(_env_file=None).routes == [Route(source="a.raw", model="m", sink="a.out")]


class FakeRegistry:
    def __init__(self, entry) -> None:
        self.entry = entry

    def get(self, model: str):
        return self.entry

    async def ready(self) -> None:
        return None


async def test_canary_routes_by_message_and_outputs_name_their_version():
    from worker.registry import Candidate, ModelEntry

    entry = ModelEntry(
        model="news_topic",
        active="1",
        candidate=Candidate(version="2", role="canary", share=0.5),
        event="canary",
        by="t",
        at="now",
    )
    fake = FakeClassifier()
    pipeline = Pipeline(ROUTE, fake, settings(triton_batch=64), FakeRegistry(entry))
    result = await pipeline.process([message(i) for i in range(40)])
    assert set(fake.versions) == {"1", "2"}
    versions = [orjson.loads(r.value)["model"]["version"] for r in result.records]
    assert result.versions == {"1", "2"} and set(versions) == {"1", "2"}
    # input order is kept although the two versions were asked separately
    assert [orjson.loads(r.value)["id"] for r in result.records] == [f"m{i}" for i in range(40)]


class FlakyCandidate(FakeClassifier):
    """Version "2" always fails; the others answer like FakeClassifier."""

    async def classify(self, model, texts, version=None, *, retry=True):
        if version == "2":
            self.versions.append(version)
            raise RuntimeError("candidate is broken")
        return await super().classify(model, texts, version, retry=retry)


def registry_entry(role: str, share: float = 0.5):
    from worker.registry import Candidate, ModelEntry

    return ModelEntry(
        model="news_topic",
        active="1",
        candidate=Candidate(version="2", role=role, share=share),
        event=role,
        by="t",
        at="now",
    )


async def test_failing_canary_falls_back_to_the_active_version_and_is_counted():
    fake = FlakyCandidate()
    pipeline = Pipeline(
        ROUTE, fake, settings(triton_batch=64), FakeRegistry(registry_entry("canary"))
    )
    result = await pipeline.process([message(i) for i in range(40)])
    assert result.labelled == 40 and result.rejected == 0
    assert {orjson.loads(r.value)["model"]["version"] for r in result.records} == {"1"}
    failed = result.candidate_failures["2"]
    assert 0 < failed < 40
    assert len(result.observed["1"].predicted) == 40


async def test_shadow_is_compared_but_never_published():
    fake = FakeClassifier()
    pipeline = Pipeline(
        ROUTE, fake, settings(triton_batch=64), FakeRegistry(registry_entry("shadow"))
    )
    result = await pipeline.process([message(i) for i in range(5)])
    assert fake.versions == ["1", "2"]
    assert {orjson.loads(r.value)["model"]["version"] for r in result.records} == {"1"}
    observed = result.observed["1"]
    assert observed.shadow_version == "2"
    assert observed.shadow_agree == [1] * 5 and observed.shadow_delta == [0.0] * 5


async def test_failing_shadow_changes_nothing_but_its_record():
    fake = FlakyCandidate()
    pipeline = Pipeline(
        ROUTE, fake, settings(triton_batch=64), FakeRegistry(registry_entry("shadow"))
    )
    result = await pipeline.process([message(i) for i in range(3)])
    assert result.labelled == 3
    assert result.observed["1"].shadow_agree == [-1, -1, -1]


async def test_injected_failure_is_isolated_to_one_processing_error():
    """The INJECT_FAILURE_TEXT seam fails the pipeline like a bug would; bisection through
    `isolate` leaves one processing_error dead letter and labels the rest, in order."""
    from worker.failures import isolate

    pipeline = Pipeline(ROUTE, FakeClassifier(), settings(inject_failure_text="BOOM"))
    batch = [message(i, "BOOM goes it" if i == 2 else "some news") for i in range(5)]
    outcomes = await isolate(
        batch, pipeline.process, pipeline.failed, retry_initial_s=0.001, retry_max_s=0.001
    )
    records = [r for outcome in outcomes for r in outcome.records]
    assert [r.key for r in records] == [f"m{i}".encode() for i in range(5)]
    assert [r.topic for r in records] == ["news.labelled"] * 2 + ["labelstream.deadletter"] + [
        "news.labelled"
    ] * 2
    error = orjson.loads(records[2].value)["error"]
    assert error["type"] == "processing_error"
    assert error["detail"].startswith("RuntimeError: injected failure")


async def test_record_kafka_refuses_becomes_its_inputs_dead_letter():
    pipeline = Pipeline(ROUTE, FakeClassifier(), settings())
    result = await pipeline.process([message(0)])
    replaced = pipeline.refused(result.records[0], ValueError("MessageSizeTooLarge"))
    body = orjson.loads(replaced.value)
    assert replaced.topic == "labelstream.deadletter" and replaced.key == b"m0"
    assert body["error"]["type"] == "processing_error"
    assert "news.labelled" in body["error"]["detail"] and body["offset"] == 100


class GatedClassifier(FakeClassifier):
    """Holds every request until `release` is set, counting how many wait at once."""

    def __init__(self, fail_text: str | None = None) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0
        self.fail_text = fail_text

    async def classify(self, model, texts, version=None, *, retry=True):
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await self.release.wait()
        self.waiting -= 1
        if self.fail_text and self.fail_text in texts:
            raise RuntimeError("Triton is down")
        return await super().classify(model, texts, version, retry=retry)


async def test_requests_of_one_batch_are_at_triton_at_once_and_labelled_in_order():
    fake = GatedClassifier()
    pipeline = Pipeline(ROUTE, fake, settings(triton_batch=2))
    task = asyncio.create_task(pipeline.process([message(i) for i in range(5)]))
    for _ in range(100):  # the requests' tasks need a few loop turns to reach the classifier
        await asyncio.sleep(0)
    fake.release.set()
    result = await task

    assert fake.most_waiting == 3  # 2 + 2 + 1 texts, none waiting for another's answer
    assert [r.key for r in result.records] == [f"m{i}".encode() for i in range(5)]


async def test_a_failed_request_raises_after_the_other_requests_are_labelled():
    fake = GatedClassifier(fail_text="bad")
    fake.release.set()
    pipeline = Pipeline(ROUTE, fake, settings(triton_batch=2))
    slots = [None] * 4
    texts = ["ok", "ok", "bad", "ok"]
    items = [(i, message(i), InputMessage(id=f"m{i}", text=text)) for i, text in enumerate(texts)]
    with pytest.raises(RuntimeError, match="Triton is down"):
        await pipeline._classify(items, slots, BatchResult(records=[]))

    assert [slot is not None for slot in slots] == [True, True, False, False]


async def test_records_under_the_review_threshold_are_also_copied_to_review():
    """The fake labels every text Sports at 0.7: under 0.8 it goes to review, under a Sports
    override of 0.5 it does not; the labelled record is published either way."""
    route = ROUTE.model_copy(update={"review_below": 0.8})
    result = await Pipeline(route, FakeClassifier(), settings()).process([message(0), message(1)])
    assert [r.topic for r in result.records] == ["news.labelled", "news.labelled"]
    assert [r.topic for r in result.reviews] == ["labelstream.review"] * 2
    review = orjson.loads(result.reviews[0].value)
    assert result.reviews[0].key == b"m0"
    assert review["id"] == "m0" and review["text"] == "some news"
    assert (review["label"], review["model"], review["version"]) == ("Sports", "news_topic", "3")
    assert review["confidence"] == pytest.approx(0.7)
    assert set(review["scores"]) == set(LABELS) and review["route"] == "news.raw"

    by_label = route.model_copy(update={"review_below_by_label": {"Sports": 0.5}})
    quiet = await Pipeline(by_label, FakeClassifier(), settings()).process([message(0)])
    assert quiet.reviews == [] and len(quiet.records) == 1
    assert (await Pipeline(ROUTE, FakeClassifier(), settings()).process([message(0)])).reviews == []
