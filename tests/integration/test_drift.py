"""Drift reports through the real broker and Triton, with a news model trained on shared data.

The model is trained on the first rows of the AG News file; the "matching" stream is made of
rows it never saw, so it has the distribution of the validation set the reference came from.
"""

from __future__ import annotations

import asyncio
import csv
import signal
import time
from datetime import datetime

import orjson
import pytest

from devstack.local import LocalStack
from tests.integration.data import data_file
from tests.integration.faults import Outcome, stable_group
from worker.client import produce, read_topics
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

MODEL = "news_drift"
TRAIN_ROWS = 1800
WINDOW = 100


def rows(task: str) -> list[tuple[str, str]]:
    with data_file(task).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["text"], row["label"]) for row in reader]


@pytest.fixture(scope="module")
def drift_model(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """Train `news_drift` on the first rows, load it in Triton; return the held-out rows."""
    from trainer.options import TrainOptions
    from trainer.settings import TrainerSettings
    from trainer.train import train_and_export

    news = rows("news")
    if len(news) < TRAIN_ROWS + 8000:
        pytest.fail(f"drift tests need the shared AG News file ({data_file('news')})")
    train_file = tmp_path_factory.mktemp("drift") / "train.tsv"
    with train_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["text", "label"])
        writer.writerows(news[:TRAIN_ROWS])
    options = TrainOptions.for_task(
        "news",
        max_steps=60,
        max_length=48,
        batch_size=16,
        validation_fraction=0.25,
        torch_threads=2,
    )
    train_and_export(
        "news",
        train_file,
        settings=TrainerSettings(),
        options=options,
        repository=stack.settings.model_repository,
        model_name=MODEL,
    )
    asyncio.run(stack.triton.load_model(MODEL))
    return news[TRAIN_ROWS:]


def drift_settings(routes_settings: WorkerSettings, **drift) -> WorkerSettings:
    """One route to the drift-test model; windows close by count unless `drift` says more."""
    tag = routes_settings.app_id.rsplit("-", 1)[-1]
    settings = routes_settings.model_copy(
        update={
            "routes": [Route(source=f"drift.raw.{tag}", model=MODEL, sink=f"drift.out.{tag}")],
            "drift": routes_settings.drift.model_copy(
                update={"window_messages": WINDOW, "window_s": 3600.0, **drift}
            ),
        }
    )
    asyncio.run(ensure_topics(settings))
    return settings


def encode(texts: list[str], prefix: str) -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": text}))
        for i, text in enumerate(texts)
    ]


async def reports(settings: WorkerSettings, expect: int, timeout_s: float = 240) -> list[dict]:
    found = await read_topics(
        settings.kafka_bootstrap_servers, [settings.drift.topic], expect=expect, timeout_s=timeout_s
    )
    out = sorted(
        (orjson.loads(r.value) for r in found),
        key=lambda r: int(r["window"]["id"].rsplit(":", 1)[1]),
    )
    assert len(out) >= expect, f"{len(out)} drift reports, expected {expect}"
    return out


def test_matching_stream_is_ok_in_95_percent_of_40_windows(
    drift_model, routes_settings, start_worker
):
    settings = drift_settings(routes_settings)
    route = settings.routes[0]
    start_worker(settings)
    held_out = [text for text, _ in drift_model[: 40 * WINDOW]]

    async def scenario() -> list[dict]:
        await produce(settings.kafka_bootstrap_servers, route.source, encode(held_out, "a"))
        return await reports(settings, expect=40, timeout_s=300)

    found = asyncio.run(scenario())
    assert len(found) == 40
    assert [r["messages"] for r in found] == [WINDOW] * 40
    statuses = [r["status"] for r in found]
    not_ok = [(r["window"]["id"], r["reasons"]) for r in found if r["status"] != "ok"]
    assert statuses.count("ok") >= 38, not_ok
    first = found[0]
    assert first["model"]["name"] == MODEL and first["model"]["version"] == "1"
    assert first["reference"] == {"version": "1"}
    assert {"psi", "js_distance", "chi2_p"} <= set(first["labels"])
    assert {"ks_distance", "ks_p", "p10", "p50", "p90", "share_below"} <= set(first["confidence"])
    assert {"mmd2", "mmd_p"} <= set(first["embedding"])


def switch_scenario(settings: WorkerSettings, before: list[str], after: list[str]) -> list[dict]:
    """Send `before`, wait until it is labelled, then `after`; return the reports of windows
    that hold only `after` messages (their first message is later than the switch)."""
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers

    async def scenario() -> list[dict]:
        await produce(bootstrap, route.source, encode(before, "before"))
        await read_topics(bootstrap, [route.sink], expect=len(before), timeout_s=180)
        await asyncio.sleep(1.0)
        switch = time.time()
        await produce(bootstrap, route.source, encode(after, "after"))
        found = await reports(settings, expect=(len(before) + len(after)) // WINDOW)
        assert [r["status"] for r in found[: len(before) // WINDOW]] == ["ok"] * (
            len(before) // WINDOW
        ), [r["reasons"] for r in found]
        return [r for r in found if _ts(r["window"]["first_message_ts"]) >= switch]

    return asyncio.run(scenario())


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_one_class_after_a_balanced_start_is_drift_in_the_first_full_window(
    drift_model, routes_settings, start_worker
):
    settings = drift_settings(routes_settings)
    start_worker(settings)
    balanced = [text for text, _ in drift_model[: 2 * WINDOW]]
    sports = [text for text, label in drift_model if label == "Sports"][: 3 * WINDOW]
    after = switch_scenario(settings, balanced, sports)
    assert after, "no window held only one-class messages"
    first = after[0]
    assert first["status"] == "drift", first["reasons"]
    assert any("predicted-label PSI" in reason for reason in first["reasons"])


def test_reviews_sent_to_the_news_model_are_drift_in_the_first_full_window(
    drift_model, routes_settings, start_worker
):
    settings = drift_settings(routes_settings)
    start_worker(settings)
    balanced = [text for text, _ in drift_model[: 2 * WINDOW]]
    reviews = [text for text, _ in rows("reviews")[: 3 * WINDOW]]
    after = switch_scenario(settings, balanced, reviews)
    assert after, "no window held only review texts"
    first = after[0]
    assert first["status"] == "drift", first["reasons"]
    reasons = " ".join(first["reasons"])
    assert "embedding MMD" in reasons, first["reasons"]


def test_worker_killed_mid_window_loses_no_counts(drift_model, routes_settings, start_worker):
    settings = drift_settings(routes_settings, window_messages=600)
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    texts = [text for text, _ in drift_model[:600]]
    first = start_worker(settings)

    async def scenario() -> list[dict]:
        await produce(bootstrap, route.source, encode(texts[:300], "d"))
        await read_topics(bootstrap, [route.sink], expect=300, timeout_s=180)
        await asyncio.sleep(3 * settings.kafka_commit_interval_s)  # offsets and table committed
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 30)
        start_worker(settings)
        await produce(bootstrap, route.source, encode(texts[300:], "e"))
        return await reports(settings, expect=1, timeout_s=240)

    found = asyncio.run(scenario())
    assert len(found) == 1
    window_counts("drift table after SIGKILL and restart (messages in the window)", 600, found)
    assert found[0]["messages"] == 600, found[0]
    assert found[0]["window"]["closed_by"] == "messages"


@pytest.mark.chaos
def test_exactly_once_window_after_sigkill_mid_batch_holds_exactly_its_messages(
    drift_model, routes_settings, start_worker
):
    """Exactly-once: killed while batches are in flight, with no wait for a commit, the
    windows of the model count each of the 600 messages once (at-least-once would count the
    replayed batches' samples again). The window never fills (1,000 messages), so it closes
    by time and its count is whatever reached it."""
    settings = drift_settings(routes_settings, window_messages=1000, window_s=20.0, tick_s=2.0)
    settings = settings.model_copy(update={"processing_guarantee": "exactly_once"})
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    texts = [text for text, _ in drift_model[:600]]
    first = start_worker(settings)

    async def scenario() -> tuple[list[dict], int]:
        await produce(bootstrap, route.source, encode(texts, "x"))
        await read_topics(bootstrap, [route.sink], expect=150, timeout_s=180)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 30)
        start_worker(settings)
        labelled = await read_topics(bootstrap, [route.sink], expect=600, timeout_s=240)
        deadline = time.monotonic() + 120
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = await read_topics(bootstrap, [settings.drift.topic], timeout_s=10)
            if sum(orjson.loads(r.value)["messages"] for r in found) >= 600:
                break
            await asyncio.sleep(2)
        await asyncio.sleep(settings.drift.window_s + 2 * settings.drift.tick_s)  # any extra
        found = await read_topics(bootstrap, [settings.drift.topic], timeout_s=10)
        return [orjson.loads(r.value) for r in found], len(labelled)

    found, labelled = asyncio.run(scenario())
    counted = sum(report["messages"] for report in found)
    case = "exactly-once: drift windows after SIGKILL mid-batch (messages counted)"
    Outcome(case, 600, counted, 0, max(0, counted - 600), max(0, 600 - counted)).record()
    assert labelled == 600, "a read_committed reader sees each labelled record once"
    assert counted == 600, [(r["window"]["id"], r["messages"]) for r in found]


@pytest.mark.chaos
def test_window_moves_to_another_worker_with_its_counts(drift_model, routes_settings, start_worker):
    """A rebalance hands the model's table partition to a worker that recovers the window
    from the changelog: half a window counted by one worker, the rest by the other."""
    settings = drift_settings(routes_settings, window_messages=600)
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    texts = [text for text, _ in drift_model[:600]]
    first = start_worker(settings)

    async def scenario() -> list[dict]:
        await produce(bootstrap, route.source, encode(texts[:300], "m"))
        await read_topics(bootstrap, [route.sink], expect=300, timeout_s=180)
        start_worker(settings)
        await stable_group(bootstrap, settings.app_id, members=2)
        first.send_signal(signal.SIGTERM)  # leaves the group: the second owns every partition
        await asyncio.to_thread(first.wait, 60)
        await stable_group(bootstrap, settings.app_id, members=1)
        await produce(bootstrap, route.source, encode(texts[300:], "n"))
        return await reports(settings, expect=1, timeout_s=240)

    found = asyncio.run(scenario())
    assert len(found) == 1
    window_counts(
        "drift table after a rebalance to another worker (messages in the window)", 600, found
    )
    assert found[0]["messages"] == 600, found[0]
    assert found[0]["window"]["closed_by"] == "messages"


def window_counts(case: str, sent: int, found: list[dict]) -> None:
    counted = found[0]["messages"]
    Outcome(case, sent, counted, 0, max(0, counted - sent), max(0, sent - counted)).record()


def test_two_workers_give_one_report_per_window_and_idle_windows_close_by_time(
    drift_model, routes_settings, start_worker
):
    settings = drift_settings(routes_settings, window_s=15.0, tick_s=1.0)
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    texts = [text for text, _ in drift_model[:650]]
    start_worker(settings)
    start_worker(settings)

    async def scenario() -> list[dict]:
        # Traffic starts once both workers share the group: a rebalance in mid-stream may
        # replay a batch (at-least-once), which this test is not about.
        await stable_group(bootstrap, settings.app_id, members=2)
        await produce(bootstrap, route.source, encode(texts, "w"))
        found = await reports(settings, expect=7, timeout_s=240)
        await asyncio.sleep(3.0)  # a duplicate report would arrive by now
        return await reports(settings, expect=len(found), timeout_s=10)

    found = asyncio.run(scenario())
    ids = [r["window"]["id"] for r in found]
    assert len(ids) == len(set(ids)), f"windows reported twice: {ids}"
    assert sum(r["messages"] for r in found) == 650
    assert all(r["messages"] <= WINDOW for r in found)
    assert found[-1]["window"]["closed_by"] == "time"
    assert found[-1]["messages"] == 650 % WINDOW
