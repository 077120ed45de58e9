"""`make bench`: model limit vs pipeline vs naive pipeline, measured side by side in one run.

1. limit    Triton alone: an async gRPC client with pre-built requests, every batch size and
            concurrency in the grid; the best texts/s per model.
2. pipeline the worker as configured: N messages produced to the input topic, timed from the
            first produce to the last labelled record; then p50/p95/p99 end-to-end latency
            (the records' `latency_ms`) with messages paced at half that rate.
3. naive    the same worker with MAX_BATCH=1 and BATCHES_IN_FLIGHT=1: one Triton call per
            message, one at a time.

Everything runs on the embedded stack (own state dir, free ports), with the models in the
repository (trained on the shared data first if there are none). Prints a table and writes
bench/results.json.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATA = {
    "news_topic": (SHARED / "ag_news" / "train.tsv", ROOT / "samples" / "news.tsv", "news"),
    "review_sentiment": (SHARED / "sst2" / "dev.tsv", ROOT / "samples" / "reviews.tsv", "reviews"),
}
console = Console(width=max(Console().width, 120))


def texts_for(model: str, count: int) -> list[str]:
    shared, sample, _ = DATA[model]
    path = shared if shared.exists() else sample
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            row["text"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    return [rows[i % len(rows)] for i in range(count)]


def ensure_models(repository: Path) -> None:
    from trainer.options import TrainOptions
    from trainer.repository import list_versions
    from trainer.settings import TrainerSettings
    from trainer.train import train_and_export

    for model, (shared, sample, task) in DATA.items():
        if not list_versions(repository / model):
            data = shared if task == "news" else SHARED / "sst2" / "train.tsv"
            # Throughput does not depend on accuracy: a short run (about a minute on two
            # cores) gives a model of the served size and sequence length (64 tokens).
            options = TrainOptions.for_task(
                task,
                max_steps=30,
                max_length=64,
                batch_size=32,
                max_train_samples=1000,
                max_eval_samples=200,
            )
            train_and_export(
                task,
                data if data.exists() else sample,
                settings=TrainerSettings(),
                options=options,
                repository=repository,
                model_name=model,
            )


async def triton_counters(url: str, model: str) -> dict[str, int]:
    """Triton's own cumulative counters for `model`: texts, executions, compute time (ns)."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = await client.get_inference_statistics(model, as_json=True)
    finally:
        await client.close()
    totals = {"texts": 0, "executions": 0, "compute_ns": 0}
    for version in stats.get("model_stats", []):
        totals["texts"] += int(version.get("inference_count", 0))
        totals["executions"] += int(version.get("execution_count", 0))
        inference = version.get("inference_stats", {})
        for part in ("compute_input", "compute_infer", "compute_output"):
            totals["compute_ns"] += int(inference.get(part, {}).get("ns", 0))
    return totals


def triton_share(before: dict[str, int], after: dict[str, int], seconds: float) -> dict:
    """How busy Triton's model was in a phase, and what one text and one execution cost."""
    texts = after["texts"] - before["texts"]
    executions = after["executions"] - before["executions"]
    compute_s = (after["compute_ns"] - before["compute_ns"]) / 1e9
    return {
        "busy": compute_s / seconds if seconds else 0.0,
        "ms_per_text": 1000 * compute_s / texts if texts else None,
        "texts_per_execution": texts / executions if executions else None,
    }


async def _drive(client, model: str, requests: list, batch: int, concurrency: int, seconds: float):
    """texts/s of `concurrency` loops cycling through pre-built requests for `seconds`."""
    from contracts import tensors
    from contracts.triton_request import requested_outputs

    outputs = requested_outputs([tensors.PROBS])
    done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def loop(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            await client.infer(model, [requests[index % len(requests)]], outputs=outputs)
            done += batch
            index += 1

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started)


async def limit(url: str, model: str, texts: list[str], seconds: float) -> dict:
    """Best texts/s over batch sizes and concurrencies, requests built before timing.

    The requests hold consecutive texts of the same list the pipeline sends, so padding (a
    batch is as long as its longest text) costs the limit what it costs the pipeline.
    """
    import tritonclient.grpc.aio as grpcclient

    from contracts.triton_request import text_input

    client = grpcclient.InferenceServerClient(url)
    results = []
    try:
        for batch in (16, 32, 64):
            requests = []
            for start in range(0, len(texts) - batch + 1, batch):
                requests.append(text_input(texts[start : start + batch]))
            for concurrency in (1, 2, 4):
                before = await triton_counters(url, model)
                started = time.perf_counter()
                rate = await _drive(client, model, requests, batch, concurrency, seconds)
                share = triton_share(
                    before, await triton_counters(url, model), time.perf_counter() - started
                )
                results.append(
                    {"batch": batch, "concurrency": concurrency, "texts_per_s": rate, **share}
                )
    finally:
        await client.close()
    best = max(results, key=lambda r: r["texts_per_s"])
    return {"best": best, "grid": results}


def start_worker(
    settings,
    app_id: str,
    route,
    state: Path,
    max_batch: int,
    guarantee: str = "at_least_once",
) -> subprocess.Popen:
    """A fresh worker on `route` alone, with its own group, topics and state dir; its log is
    `<state>/<app_id>.log`. `guarantee`: its PROCESSING_GUARANTEE."""
    from devstack.worker_process import start_worker as start_process
    from worker.settings import Route

    bench = settings.model_copy(
        update={
            "app_id": app_id,
            "routes": [Route(**route)],
            "deadletter_topic": f"bench.deadletter.{app_id}",
            "drift": settings.drift.model_copy(update={"topic": f"bench.drift.{app_id}"}),
            "state_dir": state / app_id,
            "max_batch": max_batch,
            # naive = one message per call, one call at a time, as in Faust's examples
            "batches_in_flight": 1 if max_batch == 1 else settings.batches_in_flight,
            "processing_guarantee": guarantee,
            "log_format": "json",
            "log_level": "WARNING",
        }
    )
    return start_process(bench, state / f"{app_id}.log")


async def wait_count(bootstrap: str, topic: str, count: int, timeout_s: float) -> list:
    from worker.client import read_topics

    return await read_topics(bootstrap, [topic], expect=count, timeout_s=timeout_s)


async def pipeline_run(
    settings,
    state: Path,
    model: str,
    count: int,
    max_batch: int,
    profile_pids: dict[str, int] | None = None,
    cpu_pids: dict[str, int] | None = None,
    guarantee: str = "at_least_once",
) -> dict:
    """Throughput of a fresh worker draining `count` messages (worker start-up excluded).
    Its output is read read_committed, as exactly-once requires.

    With `profile_pids` ({"name": pid}, the worker added as "worker"), py-spy samples each of
    them while the backlog drains and the summaries are returned under "profile". With
    `cpu_pids`, the CPU seconds each process (and its children) used during the drain are
    returned under "cpu_s", the worker's included.
    """
    from devstack.worker_process import stop_worker
    from worker.client import produce
    from worker.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    route = {"source": f"bench.in.{tag}", "model": model, "sink": f"bench.out.{tag}"}
    app_id = f"bench-{tag}"
    bootstrap = settings.kafka_bootstrap_servers
    from worker.settings import Route

    await ensure_topics(settings.model_copy(update={"routes": [Route(**route)], "app_id": app_id}))
    worker = start_worker(settings, app_id, route, state, max_batch, guarantee)
    try:
        warm = [(b"warm", orjson.dumps({"id": "warm", "text": "warm up"}))]
        await produce(bootstrap, route["source"], warm)
        await wait_count(bootstrap, route["sink"], 1, 180)  # the worker is up and has answered
        texts = texts_for(model, count)
        messages = [
            (f"{tag}-{i}".encode(), orjson.dumps({"id": f"{tag}-{i}", "text": t}))
            for i, t in enumerate(texts)
        ]
        before = await triton_counters(settings.triton_url, model)
        started = time.perf_counter()
        await produce(bootstrap, route["source"], messages)
        import profiling

        processes = {**(cpu_pids or {}), "worker": worker.pid}
        cpu_before = {name: profiling.cpu_seconds(pid) for name, pid in processes.items()}
        spies = _start_profiles(profile_pids, worker.pid, state, tag, count)
        found = await wait_count(bootstrap, route["sink"], count + 1, 1800)
        elapsed = time.perf_counter() - started
        triton = triton_share(before, await triton_counters(settings.triton_url, model), elapsed)
        cpu = {n: profiling.cpu_seconds(pid) - cpu_before[n] for n, pid in processes.items()}
        profiles = _finish_profiles(spies)
        if len(found) < count + 1:
            raise RuntimeError(f"only {len(found) - 1} of {count} labelled")
        rate = count / elapsed
        latency = None
        if max_batch > 1:
            latency = await paced_latency(
                bootstrap, route, tag, model, rate / 2, seconds=20, already=len(found)
            )
        result = {
            "messages": count,
            "seconds": elapsed,
            "msgs_per_s": rate,
            "triton": triton,
            "cpu_s": cpu,
            "latency": latency,
        }
        if profiles:
            result["profile"] = profiles
        return result
    finally:
        stop_worker(worker)


def _start_profiles(
    pids: dict[str, int] | None, worker_pid: int, state: Path, tag: str, count: int
) -> dict[str, tuple]:
    """py-spy on each process for roughly the middle of the drain (estimated at 100 msg/s)."""
    import profiling as profile

    if pids is None:
        return {}
    seconds = max(5, min(60, count // 200))
    spies = {}
    for name, pid in {**pids, "worker": worker_pid}.items():
        out = state / f"profile-{tag}-{name}.txt"
        spy = profile.record(pid, seconds, out)
        if spy is not None:
            stages = profile.WORKER_STAGES if name == "worker" else profile.STUB_STAGES
            spies[name] = (spy, out, stages)
    return spies


def _finish_profiles(spies: dict[str, tuple]) -> dict:
    import profiling as profile

    summaries = {}
    for name, (spy, out, stages) in spies.items():
        spy.wait(timeout=120)
        if out.exists():
            summary = profile.summarise(out, stages)
            summaries[name] = {
                "samples": summary.samples,
                "stages": summary.stages,
                "top_own": summary.top_own,
            }
    return summaries


async def paced_latency(
    bootstrap: str, route: dict, tag: str, model: str, rate: float, seconds: float, already: int
) -> dict:
    """End-to-end latency percentiles at a steady `rate` (msg/s)."""
    from aiokafka import AIOKafkaProducer

    from worker.client import read_topics

    count = max(int(rate * seconds), 50)
    texts = texts_for(model, count)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    ids = []
    try:
        started = time.perf_counter()
        for i, text in enumerate(texts):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            mid = f"{tag}-paced-{i}"
            ids.append(mid)
            await producer.send(
                route["source"], key=mid.encode(), value=orjson.dumps({"id": mid, "text": text})
            )
        await producer.flush()
    finally:
        await producer.stop()
    wanted = set(ids)
    found = await read_topics(
        bootstrap, [route["sink"]], expect=already + len(wanted), timeout_s=300
    )
    latencies = [
        body["latency_ms"]
        for body in (orjson.loads(r.value) for r in found)
        if body["id"] in wanted
    ]
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "rate_msgs_per_s": rate,
        "messages": len(latencies),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
    }


def main(
    messages: Annotated[int, typer.Option(help="Messages per model for the pipeline run")] = 20_000,
    naive_messages: Annotated[
        int, typer.Option(help="Messages per model for the naive run")
    ] = 1_000,
    limit_seconds: Annotated[float, typer.Option(help="Seconds per limit grid cell")] = 4.0,
    out: Annotated[Path, typer.Option(help="JSON results")] = ROOT / "bench" / "results.json",
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Only this model (repeatable)")
    ] = None,
    profile: Annotated[
        bool, typer.Option(help="py-spy the worker and the model's Triton stub while it drains")
    ] = False,
) -> None:
    from devstack.local import LocalStack
    from worker.logging import configure_logging
    from worker.settings import WorkerSettings

    configure_logging("WARNING")
    state = ROOT / ".labelstream" / "bench"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    settings = WorkerSettings(
        _env_file=None, state_dir=state, model_repository=ROOT / "triton_models"
    )
    ensure_models(settings.model_repository)
    stack = LocalStack(settings)
    results: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "models": {}}
    try:
        asyncio.run(stack.up(load_models=list(DATA)))
        live = stack.settings
        for model in models or list(DATA):
            console.print(f"[cyan]{model}: limit …")
            texts = texts_for(model, 64 * 16)
            lim = asyncio.run(limit(live.triton_url, model, texts, limit_seconds))
            console.print(f"[cyan]{model}: pipeline ({messages} messages) …")
            pids = None
            if profile:
                import profiling

                stub = profiling.stub_pid(stack.triton.pid, model)
                pids = {"triton stub": stub} if stub else {}
            pipe = asyncio.run(
                pipeline_run(
                    live,
                    state,
                    model,
                    messages,
                    live.max_batch,
                    profile_pids=pids,
                    cpu_pids={"triton": stack.triton.pid, "kafka": stack.kafka.pid},
                )
            )
            console.print(f"[cyan]{model}: pipeline, exactly-once ({messages} messages) …")
            services = {"triton": stack.triton.pid, "kafka": stack.kafka.pid}
            eos = asyncio.run(
                pipeline_run(
                    live, state, model, messages, live.max_batch,
                    cpu_pids=services, guarantee="exactly_once",
                )
            )  # fmt: skip
            console.print(f"[cyan]{model}: naive ({naive_messages} messages, MAX_BATCH=1) …")
            naive = asyncio.run(pipeline_run(live, state, model, naive_messages, 1))
            results["models"][model] = {
                "limit": lim,
                "pipeline": pipe,
                "exactly_once": eos,
                "naive": naive,
                "pipeline_over_limit": pipe["msgs_per_s"] / lim["best"]["texts_per_s"],
                "pipeline_over_naive": pipe["msgs_per_s"] / naive["msgs_per_s"],
                "exactly_once_slowdown": 1 - eos["msgs_per_s"] / pipe["msgs_per_s"],
            }
    finally:
        asyncio.run(stack.down())
    out.write_text(json.dumps(results, indent=2) + "\n")
    show(results)
    console.print(f"results: {out}")


def show(results: dict) -> None:
    table = Table(title="labelstream benchmark (texts/s; same run, same machine)")
    for column in (
        "model",
        "limit (best batch×conc)",
        "pipeline",
        "naive",
        "pipeline/limit",
        "pipeline/naive",
        "p50/p95/p99 ms at 50%",
    ):
        table.add_column(column, justify="right")
    for model, r in results["models"].items():
        best = r["limit"]["best"]
        latency = r["pipeline"]["latency"] or {}
        table.add_row(
            model,
            f"{best['texts_per_s']:.0f} ({best['batch']}×{best['concurrency']})",
            f"{r['pipeline']['msgs_per_s']:.0f}",
            f"{r['naive']['msgs_per_s']:.1f}",
            f"{r['pipeline_over_limit']:.2f}",
            f"{r['pipeline_over_naive']:.1f}",
            "/".join(f"{latency.get(k, float('nan')):.0f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        )
    console.print(table)
    stages = Table(title="Triton's model during each phase (its own statistics)")
    for column in ("model", "phase", "busy", "compute ms/text", "texts/execution"):
        stages.add_column(column, justify="right")
    for model, r in results["models"].items():
        phases = {
            "limit (best)": r["limit"]["best"],
            "pipeline": r["pipeline"].get("triton", {}),
            "naive": r["naive"].get("triton", {}),
        }
        for phase, t in phases.items():
            stages.add_row(
                model,
                phase,
                f"{t.get('busy', float('nan')):.0%}",
                f"{t.get('ms_per_text') or float('nan'):.2f}",
                f"{t.get('texts_per_execution') or float('nan'):.1f}",
            )
    console.print(stages)
    cpu = Table(title="CPU seconds per 1,000 messages during the pipeline drain (2 cores)")
    for column in ("model", "triton (+stubs)", "worker", "kafka", "share of the cores"):
        cpu.add_column(column, justify="right")
    for model, r in results["models"].items():
        used = r["pipeline"].get("cpu_s") or {}
        per_k = {k: 1000 * v / r["pipeline"]["messages"] for k, v in used.items()}
        share = sum(used.values()) / (r["pipeline"]["seconds"] * (results.get("cpus") or 1))
        cpu.add_row(
            model,
            *(f"{per_k.get(k, float('nan')):.1f}" for k in ("triton", "worker", "kafka")),
            f"{share:.0%}",
        )
    console.print(cpu)
    show_guarantees(results)
    for model, r in results["models"].items():
        for name, summary in r["pipeline"].get("profile", {}).items():
            stages = ", ".join(f"{stage} {share:.0%}" for stage, share in summary["stages"].items())
            own = ", ".join(f"{func} {share:.0%}" for func, share in summary["top_own"][:5])
            console.print(f"[bold]{model} / {name}[/] ({summary['samples']} samples): {stages}")
            console.print(f"  most own time: {own}")


def show_guarantees(results: dict) -> None:
    """Exactly-once beside at-least-once: same stack, same run, same message count."""
    table = Table(title="exactly-once beside at-least-once (pipeline drain, same run)")
    for column in (
        "model", "at-least-once msg/s", "exactly-once msg/s", "slowdown (target <= 15 %)",
        "worker CPU ms/1k ALOS | EOS", "kafka CPU ms/1k ALOS | EOS", "p50/p99 ms ALOS | EOS",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for model, r in results["models"].items():
        alos, eos = r["pipeline"], r.get("exactly_once")
        if not eos:
            continue

        def per_k(run: dict, name: str) -> str:
            return f"{1e6 * run.get('cpu_s', {}).get(name, float('nan')) / run['messages']:.0f}"

        def lat(run: dict) -> str:
            got = run.get("latency") or {}
            return "/".join(f"{got.get(k, float('nan')):.0f}" for k in ("p50_ms", "p99_ms"))

        slowdown = r["exactly_once_slowdown"]
        table.add_row(
            model,
            f"{alos['msgs_per_s']:.0f}",
            f"{eos['msgs_per_s']:.0f}",
            f"{slowdown:.1%}" + (" [red]over[/]" if slowdown > 0.15 else ""),
            f"{per_k(alos, 'worker')} | {per_k(eos, 'worker')}",
            f"{per_k(alos, 'kafka')} | {per_k(eos, 'kafka')}",
            f"{lat(alos)} | {lat(eos)}",
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
