"""`make demo`: the whole path on the embedded stack, end to end, then everything stopped.

Trains a small model per task if the repository has none, starts Kafka + Triton, runs the
worker, produces news, reviews and malformed messages, and prints what came out.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from devstack.local import LocalStack
from devstack.worker_process import start_worker, stop_worker
from trainer.options import TrainOptions
from trainer.repository import list_versions
from trainer.settings import TrainerSettings
from trainer.train import train_and_export
from worker.client import produce, read_topics
from worker.drift_view import drift_table
from worker.logging import configure_logging
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TASKS = {
    "news": ("news_topic", SHARED / "ag_news" / "train.tsv", ROOT / "samples" / "news.tsv"),
    "reviews": (
        "review_sentiment",
        SHARED / "sst2" / "train.tsv",
        ROOT / "samples" / "reviews.tsv",
    ),
}
# Demo-sized training: minutes on 2 CPU cores. `trainer train` without caps trains for real.
DEMO_TRAINING = {
    "max_steps": 100,
    "max_length": 64,
    "batch_size": 32,
    "max_train_samples": 3200,
    "max_eval_samples": 500,
}
MALFORMED = [
    b'{"id": "bad-1", "text": ',
    b'{"id": "bad-2"}',
    b'{"id": "bad-3", "text": ""}',
    b"\xff\xfe not utf-8",
    b"[1, 2, 3]",
    b'{"id": 6, "text": "numeric id"}',
]
# Drift windows as small as the demo's traffic, so reports appear (the default is 1,000).
DEMO_DRIFT_WINDOW = 12
console = Console(width=max(Console().width, 140))


def data_for(task: str) -> Path:
    _, shared, sample = TASKS[task]
    return shared if shared.exists() else sample


def sample_texts(task: str, count: int) -> list[str]:
    with data_for(task).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row["text"] for row in rows[-count:]]


def ensure_models(repository: Path) -> None:
    """Train a demo-sized version of each model that has none, then say what will serve."""
    for task, (model, _, _) in TASKS.items():
        if not list_versions(repository / model):
            console.print(f"[yellow]{model}: no version yet, training one on {data_for(task)}")
            train_and_export(
                task,
                data_for(task),
                settings=TrainerSettings(),
                options=TrainOptions.for_task(task, **DEMO_TRAINING),
                repository=repository,
                model_name=model,
            )
        newest = max(list_versions(repository / model))
        metrics = orjson.loads((repository / model / str(newest) / "metrics.json").read_bytes())
        console.print(
            f"[green]{model} v{newest}: held-out accuracy {metrics['accuracy']:.3f}, "
            f"macro-F1 {metrics['macro_f1']:.3f} on {metrics['examples']} texts"
        )


async def traffic(settings: WorkerSettings) -> tuple[list, list, list]:
    run = uuid.uuid4().hex[:6]
    news = [(f"news-{run}-{i}", t) for i, t in enumerate(sample_texts("news", 12))]
    reviews = [(f"review-{run}-{i}", t) for i, t in enumerate(sample_texts("reviews", 12))]
    bootstrap = settings.kafka_bootstrap_servers
    for topic, items in (("news.raw", news), ("reviews.raw", reviews)):
        await produce(
            bootstrap, topic, [(i.encode(), orjson.dumps({"id": i, "text": t})) for i, t in items]
        )
    await produce(bootstrap, "news.raw", [(None, value) for value in MALFORMED])
    labelled = await read_topics(
        bootstrap,
        ["news.labelled", "reviews.labelled"],
        expect=len(news) + len(reviews),
        timeout_s=300,
        settle_s=2,
    )
    dead = await read_topics(
        bootstrap, [settings.deadletter_topic], expect=len(MALFORMED), timeout_s=60, settle_s=1
    )
    drift = await read_topics(bootstrap, [settings.drift.topic], expect=2, timeout_s=60, settle_s=1)
    texts = dict(news + reviews)
    return (
        [(orjson.loads(r.value), texts) for r in labelled],
        [orjson.loads(r.value) for r in dead],
        [orjson.loads(r.value) for r in drift],
    )


def show(labelled: list, dead: list[dict], drift: list[dict]) -> None:
    table = Table(title=f"{len(labelled)} labelled records")
    for column in ("id", "text", "label", "confidence", "model:version", "latency ms"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for body, texts in labelled:
        text = texts.get(body["id"], "")
        table.add_row(
            body["id"],
            text[:60] + ("…" if len(text) > 60 else ""),
            body["label"],
            f"{body['confidence']:.2f}",
            f"{body['model']['name']}:{body['model']['version']}",
            f"{body['latency_ms']:.0f}",
        )
    console.print(table)
    reasons = Counter(d["error"]["type"] for d in dead)
    console.print(
        f"[bold]dead letters: {len(dead)}[/bold] "
        + ", ".join(f"{k}={v}" for k, v in reasons.items())
    )
    title = f"{len(drift)} drift reports (windows of {DEMO_DRIFT_WINDOW} messages)"
    console.print(drift_table(drift, title))


def main() -> int:
    configure_logging("WARNING")
    state_dir = ROOT / ".labelstream" / "demo"
    shutil.rmtree(state_dir, ignore_errors=True)
    settings = WorkerSettings(
        _env_file=None, state_dir=state_dir, model_repository=ROOT / "triton_models"
    )
    ensure_models(settings.model_repository)
    stack = LocalStack(settings)
    worker: subprocess.Popen | None = None
    try:
        console.print("[cyan]starting Kafka and Triton …")
        asyncio.run(stack.up(load_models=[m for m, _, _ in TASKS.values()]))
        drift = stack.settings.drift.model_copy(update={"window_messages": DEMO_DRIFT_WINDOW})
        demo = stack.settings.model_copy(update={"drift": drift})
        worker = start_worker(demo, state_dir / "worker.log")
        started = time.monotonic()
        labelled, dead, drift = asyncio.run(traffic(stack.settings))
        show(labelled, dead, drift)
        console.print(
            f"[green]done in {time.monotonic() - started:.1f} s; "
            f"worker log: {state_dir / 'worker.log'}"
        )
        return 0 if labelled and dead and drift else 1
    finally:
        if worker is not None:
            stop_worker(worker)
        asyncio.run(stack.down())
        console.print("[cyan]stack stopped")


if __name__ == "__main__":
    sys.exit(main())
