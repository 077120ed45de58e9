"""`make bench-backlog`: a worker drains a backlog (default 100,000 messages); is memory bounded?

The whole backlog is on the input topic before the worker starts. While it drains, the worker's
resident memory (/proc/<pid>/status VmRSS) and the labelled count are sampled every second; at
the end the peak (VmHWM) and the RSS at each quarter of the drain are printed and written to
bench/backlog.json, and every id is checked to be labelled exactly once or more (none lost).

To keep the run to minutes on two CPU cores, the model is a version of `review_sentiment`
trained in seconds with short sequences (MiniLM, 32 tokens): the worker does the same work
per message whatever the model, and the model's speed only sets how long the drain takes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from run import DATA, ROOT, SHARED, start_worker, texts_for

from devstack.worker_process import stop_worker

console = Console(width=max(Console().width, 110))
MODEL = "review_sentiment"


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def train_short_model(repository: Path) -> None:
    from trainer.options import TrainOptions
    from trainer.settings import TrainerSettings
    from trainer.train import train_and_export

    _, sample, task = DATA[MODEL]  # DATA holds the bench texts (dev); training reads train.tsv
    data = SHARED / "sst2" / "train.tsv"
    options = TrainOptions.for_task(
        task,
        max_steps=6,
        max_length=32,
        batch_size=16,
        max_train_samples=400,
        max_eval_samples=200,
    )
    train_and_export(
        task,
        data if data.exists() else sample,
        settings=TrainerSettings(),
        options=options,
        repository=repository,
        model_name=MODEL,
    )


async def labelled_count(bootstrap: str, topic: str) -> int:
    """Records on `topic` now (sum of end offsets; the topic is new, so starts at 0)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from worker.client import partitions_of

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def drain(settings, state: Path, count: int) -> dict:
    from worker.client import produce, read_topics
    from worker.settings import Route
    from worker.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    route = {"source": f"backlog.in.{tag}", "model": MODEL, "sink": f"backlog.out.{tag}"}
    app_id = f"backlog-{tag}"
    bootstrap = settings.kafka_bootstrap_servers
    await ensure_topics(settings.model_copy(update={"routes": [Route(**route)], "app_id": app_id}))
    texts = texts_for(MODEL, count)
    console.print(f"producing the backlog: {count} messages …")
    await produce(
        bootstrap,
        route["source"],
        (
            (f"{tag}-{i}".encode(), orjson.dumps({"id": f"{tag}-{i}", "text": t}))
            for i, t in enumerate(texts)
        ),
    )
    worker = start_worker(settings, app_id, route, state, settings.max_batch)
    samples: list[tuple[float, int, int]] = []  # (seconds, labelled, rss KiB)
    started = time.perf_counter()
    try:
        with Progress(
            "[cyan]draining", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        ) as progress:  # fmt: skip
            bar = progress.add_task("drain", total=count)
            done = 0
            while done < count:
                await asyncio.sleep(1.0)
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}")
                done = await labelled_count(bootstrap, route["sink"])
                samples.append((time.perf_counter() - started, done, rss_kib(worker.pid)["VmRSS"]))
                progress.update(bar, completed=done)
        elapsed = time.perf_counter() - started
        peak = rss_kib(worker.pid)["VmHWM"]
    finally:
        stop_worker(worker, timeout=60)
    found = await read_topics(bootstrap, [route["sink"]], expect=count, timeout_s=300)
    ids = {orjson.loads(r.value)["id"] for r in found}
    lost = count - len(ids & {f"{tag}-{i}" for i in range(count)})
    rss = np.array([s[2] for s in samples])
    quarters = {}
    for share in (0.25, 0.5, 0.75, 1.0):
        first = next(s for s in samples if s[1] >= share * count)
        quarters[f"{share:.0%}"] = first[2] / 1024
    return {
        "messages": count,
        "drain_seconds": elapsed,
        "msgs_per_s": count / elapsed,
        "labelled_records": len(found),
        "lost": lost,
        "duplicates": len(found) - len(ids),
        "peak_rss_mib": peak / 1024,
        "rss_mib_at_drained": quarters,
        "rss_mib_median": float(np.median(rss)) / 1024,
        "samples": samples,
    }


def main(
    messages: Annotated[int, typer.Option(help="Backlog size")] = 100_000,
    out: Annotated[Path, typer.Option(help="JSON results")] = ROOT / "bench" / "backlog.json",
) -> None:
    from devstack.local import LocalStack
    from worker.logging import configure_logging
    from worker.settings import WorkerSettings

    configure_logging("WARNING")
    state = ROOT / ".labelstream" / "bench-backlog"
    shutil.rmtree(state, ignore_errors=True)
    repository = state / "models"
    repository.mkdir(parents=True)
    console.print("training a short-sequence review model (seconds) …")
    train_short_model(repository)
    settings = WorkerSettings(_env_file=None, state_dir=state, model_repository=repository)
    stack = LocalStack(settings)
    try:
        asyncio.run(stack.up(load_models=[MODEL]))
        result = asyncio.run(drain(stack.settings, state, messages))
    finally:
        asyncio.run(stack.down())
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"worker memory while {messages:,} backlogged messages drain")
    for column in (
        "drain s",
        "msg/s",
        "lost",
        "duplicates",
        "peak RSS MiB",
        "RSS MiB at 25/50/75/100 %",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result['drain_seconds']:.0f}",
        f"{result['msgs_per_s']:.0f}",
        str(result["lost"]),
        str(result["duplicates"]),
        f"{result['peak_rss_mib']:.0f}",
        " / ".join(f"{v:.0f}" for v in result["rss_mib_at_drained"].values()),
    )
    console.print(table)
    console.print(f"results: {out}")
    if result["lost"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
