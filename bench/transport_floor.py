"""The transport floor of `make bench-overhead`: a plain aiokafka consume -> produce loop.

What any Python worker on aiokafka must spend per message, with none of labelstream's or
Faust's own work: `getmany` -> orjson parse -> an output record of the same shape as a
labelled record (fixed fake scores) -> `send` (acks=all, zstd like the worker's default
OUTPUT_COMPRESSION, the same headers) -> await every acknowledgement of the fetched batch ->
commit. Runs until SIGTERM/SIGINT; bench/overhead.py starts it as its own process and reads
its CPU time from /proc while it drains.

    python bench/transport_floor.py --bootstrap HOST:PORT --source IN --sink OUT --group G
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

LABELS = ("World", "Sports", "Business", "Sci/Tech")
SCORES = dict(zip(LABELS, (0.02, 0.01, 0.93, 0.04), strict=True))
MODEL = {"name": "floor", "version": "1"}
HEADERS = [
    ("content-type", b"application/json"),
    ("labelstream-model", MODEL["name"].encode()),
    ("labelstream-version", MODEL["version"].encode()),
]


def output_record(value: bytes, timestamp_ms: int, now: datetime) -> tuple[bytes, bytes]:
    """(key, value) of the labelled-record-shaped output for one input message."""
    body = orjson.loads(value)
    ts_in = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    record = {
        "id": body["id"],
        "label": "Business",
        "confidence": SCORES["Business"],
        "scores": SCORES,
        "model": MODEL,
        "ts_in": ts_in,
        "ts_out": now,
        "latency_ms": round((now - ts_in).total_seconds() * 1000.0, 3),
        "truncated": False,
        "meta": body.get("meta"),
    }
    return body["id"].encode(), orjson.dumps(record, option=orjson.OPT_UTC_Z)


async def loop(bootstrap: str, source: str, sink: str, group: str, compression: str) -> int:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=None if compression == "none" else compression,
    )
    done = 0
    try:
        await consumer.start()
        await producer.start()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            now = datetime.now(UTC)
            acks = []
            for messages in batch.values():
                for message in messages:
                    key, value = output_record(message.value, message.timestamp, now)
                    acks.append(await producer.send(sink, value, key=key, headers=HEADERS))
            await asyncio.gather(*acks)
            await consumer.commit()
            done += len(acks)
    finally:
        await producer.stop()
        await consumer.stop()
    return done


def main(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")],
    source: Annotated[str, typer.Option(help="Input topic")],
    sink: Annotated[str, typer.Option(help="Output topic")],
    group: Annotated[str, typer.Option(help="Consumer group")],
    compression: Annotated[str, typer.Option(help="Output codec (none, gzip, zstd, ...)")] = "zstd",
) -> None:
    done = asyncio.run(loop(bootstrap, source, sink, group, compression))
    print(f"transport floor: {done} messages")


if __name__ == "__main__":
    typer.run(main)
