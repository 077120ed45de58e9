"""`make bench-overhead`: the worker's own CPU per message against a plain aiokafka loop's.

Each phase puts a backlog of AG News messages (`{"id", "text"}`, key = id) on a fresh input
topic (TOPIC_PARTITIONS partitions), then drains it twice, one process at a time:

1. floor   bench/transport_floor.py, its own consumer group: aiokafka `getmany` -> orjson ->
           a labelled-record-shaped output (fixed scores) -> `send` (acks=all, zstd) -> await
           the batch's acks -> commit. What any Python worker on aiokafka spends per message.
2. worker  a fresh `worker run` (bench/run.py `start_worker`: default settings, drift on,
           LOG_LEVEL=WARNING).

While a process drains, the bench reads its outputs (sink and dead-letter topics) with its own
consumer and samples the CPU time (/proc, bench/profiling.py `cpu_seconds`) of the process, of
Kafka and of Triton (with its stubs) when the first fetch of outputs arrives and again when the
last output arrives. CPU per message and the drain rate are over the outputs between the two
samples, so start-up (imports, group join, first batch) is excluded. Then every id sent is
looked up on the sink and dead-letter topics: lost (must be 0) and duplicates.

The worker phase runs twice: with the served model (`news_topic`, trained first if the
repository has none, as `make bench` does) and with `standin_news` (bench/standin/), a
Python-backend model with the same tensors that answers from a lookup table instead of running
MiniLM, so the worker and not the model is the bottleneck, as with a GPU doing the model's work.
The stand-in's version directory is built at run time in .labelstream/bench-overhead/models,
with labels.json and reference.json of the trained news version, so the worker's drift path
has a reference. Prints a table and writes bench/overhead.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import profiling
import typer
from rich.console import Console
from rich.table import Table
from run import ROOT, ensure_models, start_worker, texts_for

from devstack.worker_process import stop_worker

console = Console(width=max(Console().width, 170))
MODEL = "news_topic"
STANDIN = "standin_news"
STANDIN_SOURCE = ROOT / "bench" / "standin"
FLOOR_SCRIPT = ROOT / "bench" / "transport_floor.py"
START_TIMEOUT_S = 300.0  # process start to its first output
IDLE_TIMEOUT_S = 120.0  # no output for this long after the first: the drain is stuck
IDLE_SAMPLE_S = 5.0  # after the drain, CPU of the idle processes over this long
IDLE_RATE_CPU_S = 0.06  # CPU seconds per second under which a process counts as idle
SETTLE_TIMEOUT_S = 60.0
PROFILE_S, PROFILE_DELAY_S = 8, 6.0


def build_repository(repository: Path) -> str:
    """news_topic (linked, trained first if need be) and standin_news version 1 in `repository`.

    Returns the news_topic version whose labels and reference the stand-in carries.
    """
    from trainer.repository import latest_version

    ensure_models(ROOT / "triton_models")
    news = ROOT / "triton_models" / MODEL
    version = str(latest_version(news))
    repository.mkdir(parents=True)
    (repository / MODEL).symlink_to(news, target_is_directory=True)
    standin = repository / STANDIN / "1"
    standin.mkdir(parents=True)
    shutil.copy(STANDIN_SOURCE / "config.pbtxt", standin.parent / "config.pbtxt")
    shutil.copy(STANDIN_SOURCE / "model.py", standin / "model.py")
    for name in ("labels.json", "reference.json"):
        shutil.copy(news / version / name, standin / name)
    return version


@dataclass
class Sample:
    seconds: float
    records: int
    cpu: dict[str, float]


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {name: profiling.cpu_seconds(pid) for name, pid in pids.items()}


async def watch_drain(
    bootstrap: str,
    topics: list[str],
    expected: set[str],
    start: Callable[[], subprocess.Popen],
    pids: dict[str, int],
    name: str,
) -> tuple[subprocess.Popen, dict]:
    """Start the draining process and read its outputs until every expected id arrived.

    CPU is sampled when the first fetch of outputs arrives, at most once a second after that
    (kept in case the drain stalls), and when the last expected id arrives.
    """
    from aiokafka import AIOKafkaConsumer

    from worker.client import assign_from_beginning

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=100,
    )
    process: subprocess.Popen | None = None
    await consumer.start()
    try:
        await assign_from_beginning(consumer, topics)
        started = time.perf_counter()
        process = start()
        pids = {**pids, name: process.pid}
        found: set[str] = set()
        records = hits = 0
        first: Sample | None = None
        recent: Sample | None = None
        shown = started
        complete = False
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            arrived = 0
            for tp, messages in batch.items():
                arrived += len(messages)
                for m in messages:
                    if tp.topic == topics[0]:  # the sink: labelled records
                        mid = orjson.loads(m.value)["id"]
                    else:  # dead letters: key = the original key = the id
                        mid = (m.key or b"").decode("utf-8", "replace")
                    if mid in expected and mid not in found:
                        found.add(mid)
                        hits += 1
            if arrived:
                records += arrived
                if hits == len(expected):
                    recent = Sample(now, records, cpu_now(pids))
                    complete = True
                    break
                if first is None:
                    first = recent = Sample(now, records, cpu_now(pids))
                elif now - recent.seconds >= 1.0:
                    recent = Sample(now, records, cpu_now(pids))
                if now - shown >= 15:
                    console.print(f"  {name}: {hits:,} of {len(expected):,} ids out")
                    shown = now
                continue
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} during the drain")
            if first is None and now - started > START_TIMEOUT_S:
                break
            if recent is not None and now - recent.seconds > IDLE_TIMEOUT_S:
                break
        result = summarise(first, recent, records, hits, complete)
        if complete:
            # Work the process still does for these messages after the last output (the drift
            # agent catching up on its samples, the last commits), until it is idle.
            result["tail_cpu_s"] = await settle(pids, name, recent.cpu)
            messages = result.get("messages_between") or 0
            if messages:
                result["cpu_us_per_msg_with_tail"] = (
                    1e6 * (recent.cpu[name] - first.cpu[name] + result["tail_cpu_s"]) / messages
                )
            # What the processes spend per second with nothing left to do (timers, heartbeats,
            # commits, drift ticks): a part of their CPU per message that depends on the rate.
            before, started = cpu_now(pids), time.perf_counter()
            await asyncio.sleep(IDLE_SAMPLE_S)
            after, seconds = cpu_now(pids), time.perf_counter() - started
            result["idle_cpu_ms_per_s"] = {
                k: 1000 * (after[k] - before[k]) / seconds for k in after
            }
        return process, result
    except BaseException:
        if process is not None:
            stop_worker(process)
        raise
    finally:
        await consumer.stop()


async def settle(pids: dict[str, int], name: str, at_last: dict[str, float]) -> float:
    """CPU seconds `name` used after its last output, once it stays under an idle rate."""
    previous = cpu_now(pids)[name]
    deadline = time.perf_counter() + SETTLE_TIMEOUT_S
    while time.perf_counter() < deadline:
        await asyncio.sleep(1.0)
        current = cpu_now(pids)[name]
        if current - previous < IDLE_RATE_CPU_S:
            return current - at_last[name]
        previous = current
    return cpu_now(pids)[name] - at_last[name]


def summarise(
    first: Sample | None,
    last: Sample | None,
    records: int,
    hits: int,
    complete: bool,
) -> dict:
    """Rates and CPU per message over the outputs after the first fetch, up to the last."""
    result: dict = {
        "complete": complete,
        "records_seen": records,
        "ids_seen": hits,
        "first_fetch_records": first.records if first else None,
    }
    if first is None or last is None or last.records <= first.records:
        return result
    between = last.records - first.records
    seconds = last.seconds - first.seconds
    result.update(
        messages_between=between,
        seconds=seconds,
        msgs_per_s=between / seconds if seconds > 0 else None,
        cpu_s={k: last.cpu[k] - first.cpu[k] for k in last.cpu},
        cpu_us_per_msg={k: 1e6 * (last.cpu[k] - first.cpu[k]) / between for k in last.cpu},
    )
    return result


async def outputs_of(bootstrap: str, topics: list[str], expected: set[str]) -> dict:
    """Lost and duplicate ids over everything now on the output topics."""
    from worker.client import read_topics

    records = await read_topics(bootstrap, topics, timeout_s=600)
    ids = []
    dead = 0
    for record in records:
        if record.topic == topics[0]:
            ids.append(orjson.loads(record.value)["id"])
        else:
            dead += 1
            ids.append((record.key or b"").decode("utf-8", "replace"))
    unique = set(ids)
    return {
        "records": len(records),
        "dead_letters": dead,
        "lost": len(expected - unique),
        "duplicates": len(ids) - len(unique),
    }


def profiled(process: subprocess.Popen, out: Path | None) -> subprocess.Popen:
    """With `out`, py-spy samples `process` for PROFILE_S seconds, PROFILE_DELAY_S after its
    start (into the drain), as a raw profile that `bench/stages.py` sorts into stages. The
    sampling itself costs the worker CPU: take figures from a run without it."""
    if out is not None:
        py_spy = Path(sys.executable).parent / "py-spy"
        command = [
            str(py_spy), "record", "--pid", str(process.pid), "--duration", str(PROFILE_S),
            "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking",
        ]  # fmt: skip
        threading.Timer(
            PROFILE_DELAY_S, subprocess.run, (command,), {"capture_output": True}
        ).start()
    return process


async def phase(
    settings,
    state: Path,
    model: str,
    count: int,
    kafka: int,
    triton: int,
    profile: Path | None = None,
    exactly_once: bool = False,
) -> dict:
    """One backlog on a fresh topic, drained by the floor and then by a fresh worker (and,
    with `exactly_once`, by a fresh exactly-once worker after it)."""
    from worker.client import produce
    from worker.settings import Route
    from worker.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    route = {"source": f"overhead.in.{tag}", "model": model, "sink": f"overhead.out.{tag}"}
    app_id = f"overhead-{tag}"
    deadletter = f"bench.deadletter.{app_id}"  # as start_worker sets DEADLETTER_TOPIC
    floor_sink = f"overhead.floor.{tag}"
    bootstrap = settings.kafka_bootstrap_servers
    worker_settings = settings.model_copy(
        update={
            "routes": [Route(**route)],
            "app_id": app_id,
            "deadletter_topic": deadletter,
            "drift": settings.drift.model_copy(update={"topic": f"bench.drift.{app_id}"}),
        }
    )
    await ensure_topics(worker_settings, extra=[floor_sink])
    ids = [f"{tag}-{i}" for i in range(count)]
    console.print(f"[cyan]{model}: producing {count:,} messages to {route['source']} …")
    await produce(
        bootstrap,
        route["source"],
        (
            (mid.encode(), orjson.dumps({"id": mid, "text": text}))
            for mid, text in zip(ids, texts_for(MODEL, count), strict=True)
        ),
    )
    expected = set(ids)
    service_pids = {"kafka": kafka, "triton": triton}

    console.print(f"[cyan]{model}: transport floor draining …")
    floor_log = (state / f"floor-{tag}.log").open("wb")

    def start_floor() -> subprocess.Popen:
        command = [
            sys.executable, str(FLOOR_SCRIPT), "--bootstrap", bootstrap,
            "--source", route["source"], "--sink", floor_sink, "--group", f"floor-{tag}",
            "--compression", settings.output_compression,
        ]  # fmt: skip
        return subprocess.Popen(
            command, stdout=floor_log, stderr=subprocess.STDOUT, start_new_session=True
        )

    process, floor = await watch_drain(
        bootstrap, [floor_sink], expected, start_floor, service_pids, "floor"
    )
    stop_worker(process)
    floor.update(await outputs_of(bootstrap, [floor_sink], expected))

    console.print(f"[cyan]{model}: worker draining …")
    worker = await worker_drain(settings, state, route, app_id, expected, service_pids, profile)
    worker_us = worker.get("cpu_us_per_msg", {}).get("worker")
    floor_us = floor.get("cpu_us_per_msg", {}).get("floor")
    result = {
        "model": model,
        "messages": count,
        "input_topic": route["source"],
        "worker": worker,
        "floor": floor,
        "worker_over_floor": worker_us / floor_us if worker_us and floor_us else None,
    }
    if exactly_once:
        result["exactly_once"] = await exactly_once_drain(
            settings, state, route, app_id, expected, service_pids
        )
    return result


async def worker_drain(
    settings,
    state: Path,
    route: dict,
    app_id: str,
    expected: set[str],
    pids: dict[str, int],
    profile: Path | None = None,
    guarantee: str = "at_least_once",
) -> dict:
    """A fresh worker (group `app_id`) drains the backlog; its outputs counted by id."""
    outputs = [route["sink"], f"bench.deadletter.{app_id}"]  # as start_worker sets it

    def start() -> subprocess.Popen:
        worker = start_worker(settings, app_id, route, state, settings.max_batch, guarantee)
        return profiled(worker, profile)

    bootstrap = settings.kafka_bootstrap_servers
    process, drained = await watch_drain(bootstrap, outputs, expected, start, pids, "worker")
    stop_worker(process)
    drained.update(await outputs_of(bootstrap, outputs, expected))
    return drained


async def exactly_once_drain(
    settings, state: Path, route: dict, app_id: str, expected: set[str], pids: dict[str, int]
) -> dict:
    """The same backlog drained again by an exactly-once worker (its own group and outputs)."""
    from worker.settings import Route
    from worker.topics import ensure_topics

    console.print(f"[cyan]{route['model']}: exactly-once worker draining …")
    eos_id = f"{app_id}-eos"
    eos_route = {**route, "sink": route["sink"] + ".eos"}
    topics = settings.model_copy(update={"routes": [Route(**eos_route)], "app_id": eos_id})
    await ensure_topics(topics, extra=[f"bench.deadletter.{eos_id}"])
    return await worker_drain(
        settings, state, eos_route, eos_id, expected, pids, guarantee="exactly_once"
    )


async def lone_latency(settings, state: Path, model: str, count: int) -> dict:
    """End-to-end latency of a lone message at low load: one message at a time, the next only
    after the previous one's labelled record arrived (no batching to hide behind).

    Timed from the produce call to the labelled record in the bench's own consumer, so the
    producer's acknowledgement, the worker's consume, Triton and the publish all count."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from worker.client import assign_from_beginning, produce
    from worker.settings import Route
    from worker.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    route = {"source": f"lone.in.{tag}", "model": model, "sink": f"lone.out.{tag}"}
    app_id = f"lone-{tag}"
    bootstrap = settings.kafka_bootstrap_servers
    await ensure_topics(settings.model_copy(update={"routes": [Route(**route)], "app_id": app_id}))
    process = start_worker(settings, app_id, route, state, settings.max_batch)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        await consumer.start()
        await producer.start()
        await assign_from_beginning(consumer, [route["sink"]])
        await produce(
            bootstrap, route["source"], [(b"warm", orjson.dumps({"id": "warm", "text": "warm up"}))]
        )
        await _until(consumer, "warm", 180)
        texts = texts_for(MODEL, count)
        wall, recorded = [], []
        for i, text in enumerate(texts):
            mid = f"{tag}-{i}"
            started = time.perf_counter()
            await producer.send_and_wait(
                route["source"], key=mid.encode(), value=orjson.dumps({"id": mid, "text": text})
            )
            body = await _until(consumer, mid, 30)
            wall.append(1000 * (time.perf_counter() - started))
            recorded.append(body["latency_ms"])
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
        await consumer.stop()
        stop_worker(process)
    p50, p99 = np.percentile(wall, [50, 99])
    return {
        "model": model,
        "messages": count,
        "p50_ms": p50,
        "p99_ms": p99,
        "record_latency_p50_ms": float(np.percentile(recorded, 50)),
    }


async def _until(consumer, mid: str, timeout_s: float) -> dict:
    """The labelled record of `mid`, read from where the consumer is."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        batch = await consumer.getmany(timeout_ms=50)
        for messages in batch.values():
            for message in messages:
                body = orjson.loads(message.value)
                if body["id"] == mid:
                    return body
    raise RuntimeError(f"{mid} not labelled within {timeout_s} s")


def main(
    messages: Annotated[
        int, typer.Option(help="Backlog of the stand-in phase (and its floor)")
    ] = 50_000,
    real_messages: Annotated[
        int, typer.Option(help="Backlog of the served-model phase (and its floor); 0 skips it")
    ] = 50_000,
    profile: Annotated[
        Path | None,
        typer.Option(help="py-spy the stand-in phase's worker into this raw profile"),
    ] = None,
    lone_messages: Annotated[
        int, typer.Option(help="Messages sent one at a time per model for the latency; 0 skips")
    ] = 40,
    out: Annotated[Path, typer.Option(help="JSON results")] = ROOT / "bench" / "overhead.json",
    exactly_once: Annotated[
        bool, typer.Option(help="Drain the stand-in backlog with an exactly-once worker too")
    ] = True,
) -> None:
    from devstack.local import LocalStack
    from worker.logging import configure_logging
    from worker.settings import WorkerSettings

    began = time.perf_counter()
    configure_logging("WARNING")
    state = ROOT / ".labelstream" / "bench-overhead"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    repository = state / "models"
    news_version = build_repository(repository)
    settings = WorkerSettings(_env_file=None, state_dir=state, model_repository=repository)
    stack = LocalStack(settings)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "news_topic_version": news_version,
        "phases": [],
    }
    try:
        asyncio.run(stack.up(load_models=[MODEL, STANDIN]))
        live = stack.settings
        plan = [(MODEL, real_messages), (STANDIN, messages)]
        for model, count in plan:
            if count > 0:
                spy = profile if model == STANDIN else None
                pids = (stack.kafka.pid, stack.triton.pid)
                eos = exactly_once and model == STANDIN  # where the worker is the bottleneck
                results["phases"].append(
                    asyncio.run(phase(live, state, model, count, *pids, spy, exactly_once=eos))
                )
        console.print(f"[cyan]lone messages ({lone_messages} per model, one at a time) …")
        results["lone"] = [
            asyncio.run(lone_latency(live, state, model, lone_messages))
            for model, _ in plan
            if lone_messages > 0
        ]
    finally:
        asyncio.run(stack.down())
    results["wall_s"] = time.perf_counter() - began
    out.write_text(json.dumps(results, indent=2) + "\n")
    show(results)
    console.print(f"results: {out} (wall {results['wall_s']:.0f} s)")
    if any(p["worker"]["lost"] or p["floor"]["lost"] for p in results["phases"]):
        raise typer.Exit(1)


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def show(results: dict) -> None:
    table = Table(
        title="worker vs transport floor (CPU from /proc, first output to last; same run)"
    )
    columns = (
        "phase", "messages", "worker CPU µs/msg", "+ tail after last output", "drain msg/s",
        "floor CPU µs/msg",
        "floor msg/s", "worker/ floor", "Kafka µs/msg worker | floor", "Triton µs/msg",
        "worker idle CPU ms/s", "lost", "dupli- cates",
    )  # fmt: skip
    for index, column in enumerate(columns):
        table.add_column(column, justify="right", no_wrap=index == 0)

    def num(value, digits: int = 0) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}"

    for p in results["phases"]:
        worker, floor = p["worker"], p["floor"]
        w_cpu, f_cpu = worker.get("cpu_us_per_msg", {}), floor.get("cpu_us_per_msg", {})
        lost = str(worker["lost"]) + ("" if not floor["lost"] else f" (floor {floor['lost']})")
        duplicates = str(worker["duplicates"]) + (
            "" if not floor["duplicates"] else f" (floor {floor['duplicates']})"
        )
        table.add_row(
            p["model"] + ("" if worker["complete"] else " (incomplete)"),
            f"{p['messages']:,}",
            num(w_cpu.get("worker")),
            num(worker.get("cpu_us_per_msg_with_tail")),
            num(worker.get("msgs_per_s")),
            num(f_cpu.get("floor"), 1),
            num(floor.get("msgs_per_s")),
            num(p["worker_over_floor"], 1),
            f"{num(w_cpu.get('kafka'))} | {num(f_cpu.get('kafka'))}",
            num(w_cpu.get("triton")),
            num(worker.get("idle_cpu_ms_per_s", {}).get("worker"), 1),
            lost,
            duplicates,
        )
    console.print(table)
    show_exactly_once(results)
    if results.get("lone"):
        lone = Table(title="lone message at low load: produce -> labelled record (ms)")
        for column in ("model", "messages", "p50", "p99", "record latency_ms p50"):
            lone.add_column(column, justify="right")
        for r in results["lone"]:
            lone.add_row(
                r["model"], str(r["messages"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                f"{r['record_latency_p50_ms']:.1f}",
            )  # fmt: skip
        console.print(lone)


def show_exactly_once(results: dict) -> None:
    table = Table(title="exactly-once worker beside the at-least-once one (same backlog, same run)")
    for column in (
        "phase", "ALOS msg/s", "EOS msg/s", "slowdown", "ALOS CPU µs/msg", "EOS CPU µs/msg",
        "EOS/floor", "Kafka µs/msg ALOS | EOS", "EOS lost", "EOS dupli- cates",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for p in results["phases"]:
        eos = p.get("exactly_once")
        if not eos:
            continue
        alos, floor = p["worker"], p["floor"]
        a_cpu, e_cpu = alos.get("cpu_us_per_msg", {}), eos.get("cpu_us_per_msg", {})
        f_us = floor.get("cpu_us_per_msg", {}).get("floor")
        table.add_row(
            p["model"],
            f"{alos.get('msgs_per_s', 0):,.0f}",
            f"{eos.get('msgs_per_s', 0):,.0f}",
            f"{1 - eos.get('msgs_per_s', 0) / alos['msgs_per_s']:.1%}",
            f"{a_cpu.get('worker', 0):,.0f}",
            f"{e_cpu.get('worker', 0):,.0f}",
            f"{e_cpu.get('worker', 0) / f_us:.1f}" if f_us else "n/a",
            f"{a_cpu.get('kafka', 0):,.0f} | {e_cpu.get('kafka', 0):,.0f}",
            str(eos["lost"]),
            str(eos["duplicates"]),
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
