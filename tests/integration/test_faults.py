"""Faults on the real stack, each case counted by message id (see `faults.py`).

Worker stopped (SIGTERM) or killed (SIGKILL) mid-stream, one of two workers killed, Triton
frozen past the request timeout, one model unloaded while both routes carry traffic, and the
broker restarted: in every case each message ends labelled, none is lost, and duplicates appear
only where a process crashed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import datetime

import orjson
import pytest
import tritonclient.http as httpclient
from aiokafka import AIOKafkaConsumer

from tests.integration.faults import (
    collect,
    ids,
    messages,
    outcome,
    stable_group,
    uncommitted,
    wait_committed,
    wait_labelled,
)
from worker.client import produce, read_topics
from worker.settings import Route, WorkerSettings

pytestmark = pytest.mark.integration

EXACTLY_ONCE_RUNS = [
    pytest.param("exactly_once", id=f"exactly_once-{run}", marks=pytest.mark.chaos)
    for run in range(1, 6)
]
"""Issue 18's acceptance: five runs of each crash case in exactly-once mode (`make chaos`)."""


def with_guarantee(settings: WorkerSettings, guarantee: str) -> WorkerSettings:
    return settings.model_copy(update={"processing_guarantee": guarantee})


def assert_delivery(result, settings: WorkerSettings, at_least_once_duplicates: int) -> None:
    """Nothing lost; exactly-once: no duplicate for a read_committed reader (`collect`);
    at-least-once: at most what was in flight since the last commit."""
    assert result.lost == 0 and result.dead_lettered == 0
    if settings.exactly_once:
        assert result.duplicates == 0
    else:
        assert result.duplicates <= at_least_once_duplicates


def test_sigterm_finishes_batches_in_flight_and_commits_them(routes_settings, start_worker):
    """A graceful stop publishes what is in flight and commits it: a restart labels no
    message twice (Faust alone committed nothing on stop: ~1,300 duplicates at 1,000 msg/s)."""
    settings = routes_settings
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("term", "news", 1500)
    first = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch)
        await wait_labelled(bootstrap, [news.sink], 200)
        first.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait, 60)
        left = await uncommitted(bootstrap, settings.app_id, [news.source])
        done = len(await read_topics(bootstrap, [news.sink]))
        assert left == len(batch) - done, "the stop committed exactly what was published"
        start_worker(settings)
        return await collect(bootstrap, [news.sink], settings.deadletter_topic, ids(batch))

    labelled, dead = asyncio.run(scenario())
    assert first.returncode == 0
    result = outcome("worker SIGTERM mid-stream, restarted", ids(batch), labelled, dead)
    assert result.lost == 0 and result.duplicates == 0 and result.dead_lettered == 0


@pytest.mark.parametrize("guarantee", ["at_least_once", *EXACTLY_ONCE_RUNS])
def test_sigkill_mid_stream_loses_nothing(routes_settings, start_worker, guarantee):
    settings = with_guarantee(routes_settings, guarantee)
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("kill", "news", 1500)
    first = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch)
        await wait_labelled(bootstrap, [news.sink], 200)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 60)
        start_worker(settings)
        return await collect(bootstrap, [news.sink], settings.deadletter_topic, ids(batch))

    labelled, dead = asyncio.run(scenario())
    result = outcome(
        f"worker SIGKILL mid-stream, restarted ({guarantee})", ids(batch), labelled, dead
    )
    # At-least-once: only what was processed after the last commit (1 s) comes again.
    in_flight = settings.batches_in_flight * settings.max_batch
    assert_delivery(
        result, settings, in_flight + settings.topic_partitions * settings.max_batch * 2
    )


@pytest.mark.chaos
@pytest.mark.parametrize("guarantee", ["at_least_once", *EXACTLY_ONCE_RUNS])
def test_two_workers_one_killed_the_survivor_takes_over_in_seconds(
    routes_settings, start_worker, guarantee
):
    settings = with_guarantee(routes_settings, guarantee).model_copy(
        update={"kafka_session_timeout_s": 6.0}
    )
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("pair", "news", 2000)
    doomed = start_worker(settings)
    survivor = start_worker(settings)

    async def scenario():
        # Both workers are in the group once both have labelled (each owns some partitions).
        await produce(bootstrap, news.source, batch[:40])
        await wait_labelled(bootstrap, [news.sink], 40)
        await asyncio.sleep(settings.kafka_session_timeout_s)  # the second join settles
        await produce(bootstrap, news.source, batch[40:])
        await wait_labelled(bootstrap, [news.sink], 300)
        doomed.send_signal(signal.SIGKILL)
        killed_at = time.time()
        await asyncio.to_thread(doomed.wait, 30)
        labelled, dead = await collect(
            bootstrap, [news.sink], settings.deadletter_topic, ids(batch)
        )
        sources = await read_topics(bootstrap, [news.source])
        return labelled, dead, sources, killed_at

    labelled, dead, sources, killed_at = asyncio.run(scenario())
    assert survivor.poll() is None
    result = outcome(f"two workers, one SIGKILLed ({guarantee})", ids(batch), labelled, dead)
    assert_delivery(result, settings, len(batch))
    # Failover: for each input partition, the first record labelled after the kill.
    partition_of = {r.key.decode(): r.partition for r in sources}
    resumed: dict[int, float] = {}
    for record in labelled:
        body = orjson.loads(record.value)
        at = datetime.fromisoformat(body["ts_out"]).timestamp()
        if at > killed_at and body["id"] in partition_of:
            part = partition_of[body["id"]]
            resumed[part] = min(resumed.get(part, at), at)
    failover = max(resumed.values()) - killed_at
    print(f"failover: every partition labelling again {failover:.1f} s after the kill")
    assert len(resumed) == settings.topic_partitions
    assert failover < settings.kafka_session_timeout_s + 15


@pytest.mark.chaos
@pytest.mark.parametrize("guarantee", ["at_least_once", *EXACTLY_ONCE_RUNS])
def test_triton_frozen_past_the_request_timeout(stack, routes_settings, start_worker, guarantee):
    """Requests time out while Triton is frozen (SIGSTOP) and are retried once it answers."""
    settings = with_guarantee(routes_settings, guarantee).model_copy(
        update={"triton_timeout_s": 2.0}
    )
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("slow", "news", 400)
    worker = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch[:100])
        await wait_labelled(bootstrap, [news.sink], 100)
        os.kill(stack.triton.pid, signal.SIGSTOP)
        try:
            await produce(bootstrap, news.source, batch[100:])
            await asyncio.sleep(3 * settings.triton_timeout_s)
            frozen = len(await read_topics(bootstrap, [news.sink]))
        finally:
            os.kill(stack.triton.pid, signal.SIGCONT)
        assert frozen == 100, "nothing is labelled while Triton does not answer"
        return await collect(bootstrap, [news.sink], settings.deadletter_topic, ids(batch))

    labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None
    case = f"Triton frozen 3× past the request timeout ({guarantee})"
    result = outcome(case, ids(batch), labelled, dead)
    assert result.lost == 0 and result.duplicates == 0 and result.dead_lettered == 0


@pytest.mark.chaos
def test_exactly_once_a_frozen_worker_is_fenced_when_it_wakes(routes_settings, start_worker):
    """A zombie: worker A is frozen (SIGSTOP) past the session timeout, B takes its partitions
    over and fences A's transactional ids; woken (SIGCONT), A's commits fail ProducerFenced, its
    batches are released and it rejoins. A read_committed reader sees each input once."""
    settings = with_guarantee(routes_settings, "exactly_once").model_copy(
        update={"kafka_session_timeout_s": 6.0}
    )
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("zombie", "news", 2000)
    zombie = start_worker(settings)
    survivor = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, batch[:40])
        await wait_labelled(bootstrap, [news.sink], 40)
        await stable_group(bootstrap, settings.app_id, members=2)
        await produce(bootstrap, news.source, batch[40:])
        await wait_labelled(bootstrap, [news.sink], 300)
        zombie.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3 * settings.kafka_session_timeout_s)  # B owns everything
            await wait_labelled(bootstrap, [news.sink], 900)
        finally:
            zombie.send_signal(signal.SIGCONT)
        return await collect(bootstrap, [news.sink], settings.deadletter_topic, ids(batch))

    labelled, dead = asyncio.run(scenario())
    assert zombie.poll() is None and survivor.poll() is None, "both keep running"
    result = outcome(
        "exactly-once: a frozen worker wakes after a takeover", ids(batch), labelled, dead
    )
    assert_delivery(result, settings, 0)


def test_one_model_unloaded_the_other_route_keeps_flowing(stack, routes_settings, start_worker):
    settings = routes_settings
    news, reviews = settings.routes
    bootstrap = settings.kafka_bootstrap_servers
    news_batch = messages("unl-n", "news", 400)
    review_batch = messages("unl-r", "reviews", 400)
    worker = start_worker(settings)
    triton = httpclient.InferenceServerClient(stack.triton.http_url.removeprefix("http://"))

    async def scenario():
        await produce(bootstrap, reviews.source, review_batch[:100])
        await wait_labelled(bootstrap, [reviews.sink], 100)
        await asyncio.to_thread(triton.unload_model, "review_sentiment")
        try:
            await produce(bootstrap, reviews.source, review_batch[100:])
            await produce(bootstrap, news.source, news_batch)
            await wait_labelled(bootstrap, [news.sink], len(news_batch))
            stalled = len(await read_topics(bootstrap, [reviews.sink]))
        finally:
            await stack.triton.load_model("review_sentiment")
        assert stalled == 100, "the unloaded model's route waits, it does not dead-letter"
        wanted = ids(news_batch) | ids(review_batch)
        return await collect(
            bootstrap, [news.sink, reviews.sink], settings.deadletter_topic, wanted
        )

    labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None
    wanted = ids(news_batch) | ids(review_batch)
    result = outcome("one of two models unloaded while both routes flow", wanted, labelled, dead)
    assert result.lost == 0 and result.duplicates == 0 and result.dead_lettered == 0


@pytest.mark.chaos
@pytest.mark.parametrize("guarantee", ["at_least_once", *EXACTLY_ONCE_RUNS])
def test_broker_restart_resumes_from_committed_offsets(
    stack, routes_settings, start_worker, guarantee
):
    settings = with_guarantee(routes_settings, guarantee)
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    before = messages("brk-a", "news", 600)
    after = messages("brk-b", "news", 400)
    worker = start_worker(settings)

    async def scenario():
        await produce(bootstrap, news.source, before)
        await wait_labelled(bootstrap, [news.sink], 150)
        await stack.kafka.stop()
        await asyncio.sleep(3)
        await stack.kafka.start()
        await produce(bootstrap, news.source, after)
        wanted = ids(before) | ids(after)
        labelled, dead = await collect(
            bootstrap, [news.sink], settings.deadletter_topic, wanted, timeout_s=240
        )
        left = await wait_committed(bootstrap, settings.app_id, [news.source], timeout_s=60)
        return labelled, dead, left

    labelled, dead, left = asyncio.run(scenario())
    assert worker.poll() is None, "the worker reconnects instead of exiting"
    wanted = ids(before) | ids(after)
    case = f"broker stopped and restarted mid-stream ({guarantee})"
    result = outcome(case, wanted, labelled, dead)
    assert_delivery(result, settings, len(wanted))
    assert left == 0, f"{left} messages left uncommitted after the restart"


def test_the_worker_creates_its_source_topics_before_it_joins(routes_settings, start_worker):
    """Faust never creates source topics, and a consumer subscribing first would get the
    broker's default partition count: `worker run` creates them with TOPIC_PARTITIONS."""
    tag = uuid.uuid4().hex[:8]
    route = Route(source=f"fresh.raw.{tag}", model="news_topic", sink=f"fresh.labelled.{tag}")
    settings = routes_settings.model_copy(update={"routes": [route], "topic_partitions": 3})
    bootstrap = settings.kafka_bootstrap_servers
    batch = messages("fresh", "news", 60)
    worker = start_worker(settings)

    async def scenario():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            for _ in range(120):
                partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(  # noqa: SLF001
                    route.source
                )
                if partitions:
                    break
                await asyncio.sleep(0.5)
        finally:
            await consumer.stop()
        await produce(bootstrap, route.source, batch)
        labelled, dead = await collect(
            bootstrap, [route.sink], settings.deadletter_topic, ids(batch)
        )
        return partitions, labelled, dead

    partitions, labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None
    assert partitions == {0, 1, 2}
    result = outcome("source topic created by the worker itself", ids(batch), labelled, dead)
    assert result.lost == 0 and result.duplicates == 0 and result.dead_lettered == 0


@pytest.mark.chaos
def test_overload_backlog_drains_with_bounded_memory_and_no_timeouts(
    routes_settings, start_worker, tmp_path
):
    """Arrivals far above the sustained rate (30 s worth, produced at once) drain with the
    worker's memory flat and no request timing out (no batch ever failed and was retried)."""
    settings = routes_settings
    news = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    warm = messages("load-w", "news", 300)
    worker = start_worker(settings)

    def rss_mib(field: str) -> float:
        status = open(f"/proc/{worker.pid}/status").read()  # noqa: SIM115, PTH123
        line = next(x for x in status.splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) / 1024

    async def scenario():
        await produce(bootstrap, news.source, warm[:20])
        await wait_labelled(bootstrap, [news.sink], 20)
        started = time.monotonic()
        await produce(bootstrap, news.source, warm[20:])
        await wait_labelled(bootstrap, [news.sink], len(warm))
        rate = (len(warm) - 20) / (time.monotonic() - started)
        backlog = messages("load", "news", int(30 * rate))
        before = rss_mib("VmRSS")
        await produce(bootstrap, news.source, backlog)
        labelled, dead = await collect(
            bootstrap, [news.sink], settings.deadletter_topic, ids(backlog), timeout_s=300
        )
        return rate, backlog, before, labelled, dead

    rate, backlog, before, labelled, dead = asyncio.run(scenario())
    assert worker.poll() is None
    peak = rss_mib("VmHWM")
    result = outcome(
        f"overload: {len(backlog)} messages (30 s at {rate:.0f}/s) produced at once",
        ids(backlog),
        labelled,
        dead,
    )
    print(f"overload: RSS {before:.0f} MiB before the backlog, peak {peak:.0f} MiB")
    assert result.lost == 0 and result.duplicates == 0 and result.dead_lettered == 0
    assert peak - before < 100, "memory grows with the backlog"
    failures = (tmp_path / "worker-0.log").read_text().count('"batch_failed"')
    assert failures == 0, f"{failures} batches failed (timeouts) under load"
