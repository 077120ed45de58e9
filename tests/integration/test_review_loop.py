"""The review loop end to end on the real broker and Triton (issue 19's acceptance): a news model
trained on 300 AG News rows serves held-out rows; its uncertain records reach the review topic; a
scripted reviewer sends the true labels as feedback; the drift reports' live accuracy equals the
accuracy worked out from the same ids; `trainer retrain` trains on the corrections and its version
beats the first on the held-out rows. Two trainings: `make chaos`.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from contracts.review import Feedback, Review
from tests.integration.data import data_file
from tests.integration.test_hot_swap import rollout
from trainer.options import TrainOptions
from trainer.settings import TrainerSettings
from trainer.train import train_and_export
from worker.client import produce, read_topics
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MODEL = "news_loop"
ROOT = Path(__file__).resolve().parents[2]
RECIPE = {"epochs": 3, "max_length": 48, "batch_size": 16, "hybrid": False, "torch_threads": 2}


def news_rows() -> list[tuple[str, str]]:
    with data_file("news").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["text"], row["label"]) for row in reader]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def loop_settings(routes_settings: WorkerSettings) -> WorkerSettings:
    tag = uuid.uuid4().hex[:8]
    route = Route(source=f"loop.raw.{tag}", model=MODEL, sink=f"loop.out.{tag}", review_below=0.9)
    settings = routes_settings.model_copy(
        update={
            "routes": [route],
            "review_topic": f"loop.review.{tag}",
            "feedback_topic": f"loop.feedback.{tag}",
            "drift": routes_settings.drift.model_copy(
                update={"window_s": 8.0, "tick_s": 1.0, "window_messages": 5000}
            ),
        }
    )
    asyncio.run(ensure_topics(settings))
    return settings


async def correct(settings: WorkerSettings, truth: dict[str, str]) -> list[Review]:
    """The scripted reviewer: every review answered with the row's true label."""
    found = await read_topics(settings.kafka_bootstrap_servers, [settings.review_topic])
    reviews = [Review.from_json(r.value) for r in found]
    now = datetime.now(UTC).isoformat()
    answers = [
        (r.id.encode(), Feedback(r.id, truth[r.id], "script", now, r.text).to_json())
        for r in reviews
    ]
    await produce(settings.kafka_bootstrap_servers, settings.feedback_topic, answers)
    return reviews


async def feedback_reports(settings: WorkerSettings, version: str, total: int) -> dict:
    """Corrections and agreements over the drift reports, summed, once they cover `total`;
    a few more messages keep windows closing (corrections ride on the next closed window)."""
    bootstrap, route = settings.kafka_bootstrap_servers, settings.routes[0]
    deadline, nudge, summed = time.monotonic() + 180, 0, {"corrections": 0, "agreed": 0}
    while summed["corrections"] < total and time.monotonic() < deadline:
        nudge += 1
        body = {"id": f"nudge-{nudge}", "text": "Stocks rose on Friday as markets rallied."}
        await produce(bootstrap, route.source, [(body["id"].encode(), orjson.dumps(body))])
        await asyncio.sleep(settings.drift.window_s + 2)
        reports = [
            orjson.loads(r.value) for r in await read_topics(bootstrap, [settings.drift.topic])
        ]
        sections = [r["feedback"][version] for r in reports if version in r.get("feedback", {})]
        summed = {k: sum(s[k] for s in sections) for k in ("corrections", "agreed")}
        summed["reports"] = sections
    return summed


def retrain(settings: WorkerSettings, base: Path, held_out: Path) -> dict:
    """`trainer retrain` as a user runs it; its report (retrain.json)."""
    env = {
        **os.environ,
        "TRAINER_REPOSITORY": str(settings.model_repository),
        "TRAINER_TRITON_URL": settings.triton_url,
        "TRAINER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TRAINER_REGISTRY_TOPIC": settings.registry_topic,
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "trainer", "retrain", "--model", MODEL, "--data", str(base),
        "--validation-data", str(held_out), "--feedback-topic", settings.feedback_topic,
        "--review-topic", settings.review_topic, "--epochs", "3", "--max-length", "48",
        "--batch-size", "16", "--no-hybrid", "--torch-threads", "2",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-2000:]
    latest = max((settings.model_repository / MODEL).glob("[0-9]*"), key=lambda p: int(p.name))
    return json.loads((latest / "retrain.json").read_text())


def test_corrections_measure_live_accuracy_and_train_a_better_version(
    stack, routes_settings, start_worker, tmp_path
):
    news = news_rows()
    base = write_tsv(tmp_path / "base.tsv", news[:300])
    held_out = write_tsv(tmp_path / "held_out.tsv", news[300:700])
    stream = news[700:1200]
    train_and_export(
        "news",
        base,
        settings=TrainerSettings(),
        options=TrainOptions.for_task("news", progress=False, **RECIPE),
        repository=stack.settings.model_repository,
        model_name=MODEL,
        validation_data=held_out,
    )
    rollout(stack, MODEL).publish(1)
    settings = loop_settings(routes_settings)
    start_worker(settings)
    truth = {f"loop-{i}": label for i, (_, label) in enumerate(stream)}
    messages = [
        (f"loop-{i}".encode(), orjson.dumps({"id": f"loop-{i}", "text": text}))
        for i, (text, _) in enumerate(stream)
    ]

    async def serve_and_review() -> tuple[list, list[Review], dict]:
        bootstrap, route = settings.kafka_bootstrap_servers, settings.routes[0]
        await produce(bootstrap, route.source, messages)
        labelled = await read_topics(bootstrap, [route.sink], expect=len(stream), timeout_s=300)
        reviews = await correct(settings, truth)
        return labelled, reviews, await feedback_reports(settings, "1", len(reviews))

    labelled, reviews, live = asyncio.run(serve_and_review())
    bodies = [orjson.loads(r.value) for r in labelled]
    uncertain = {b["id"] for b in bodies if b["confidence"] < 0.9}
    assert {r.id for r in reviews} == uncertain, "exactly the records under review_below"
    assert len(reviews) >= 50, "enough corrections to learn from"
    assert all(r.version == "1" for r in reviews)
    agreed = sum(r.label == truth[r.id] for r in reviews)
    print(f"reviews {len(reviews)}, right {agreed}: live accuracy {agreed / len(reviews):.3f}")
    assert (live["corrections"], live["agreed"]) == (len(reviews), agreed)
    for section in live["reports"]:
        assert section["accuracy"] == pytest.approx(section["agreed"] / section["corrections"])

    report = retrain(settings, base, held_out)
    first = report["scores"]["held_out"]["active"]["accuracy"]
    second = report["scores"]["held_out"]["new"]["accuracy"]
    print(f"held-out accuracy: first {first:.3f}, retrained {second:.3f}")
    assert report["published"] and report["corrections"]["used"] == len(reviews)
    assert second > first
