"""`make bench-compression`: CPU per message against bytes on the wire, per output codec.

Builds produce batches exactly as aiokafka does (`DefaultRecordBatchBuilder`, 16 KiB batches,
the producer's default `max_batch_size`) from realistic labelled records (shared AG News and
SST-2 texts kept in `meta`, the scores, model and timestamps of a real output), for each of
none, gzip, snappy, lz4 and zstd, side by side in one run. CPU is `time.process_time` of
building and compressing the batches; bytes are the finished batches' sizes. Prints a table and
writes bench/compression.json. The default of OUTPUT_COMPRESSION comes from here.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import orjson
from aiokafka.record.default_records import DefaultRecordBase
from aiokafka.record.default_records import DefaultRecordBatchBuilder as Builder
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CODECS = {
    "none": DefaultRecordBase.CODEC_NONE,
    "gzip": DefaultRecordBase.CODEC_GZIP,
    "snappy": DefaultRecordBase.CODEC_SNAPPY,
    "lz4": DefaultRecordBase.CODEC_LZ4,
    "zstd": DefaultRecordBase.CODEC_ZSTD,
}
BATCH_BYTES = 16 * 1024
REPEATS = 5


def records(limit: int = 10_000) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Labelled records as the worker writes them, with their headers."""
    out = []
    for path, labels in (
        (SHARED / "ag_news" / "train.tsv", ["World", "Sports", "Business", "Sci/Tech"]),
        (SHARED / "sst2" / "train.tsv", ["negative", "positive"]),
    ):
        with path.open(newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle, delimiter="\t")):
                if i >= limit // 2:
                    break
                share = 1.0 / len(labels)
                body = {
                    "id": f"{path.parent.name}-{i}",
                    "label": labels[i % len(labels)],
                    "confidence": 0.912345,
                    "scores": {
                        label: round(share + 0.001 * k, 6) for k, label in enumerate(labels)
                    },
                    "model": {"name": "news_topic", "version": "3"},
                    "ts_in": "2026-12-02T10:00:00.123000+00:00",
                    "ts_out": "2026-12-02T10:00:00.187000+00:00",
                    "latency_ms": 64.0,
                    "truncated": False,
                    "meta": {"text": row["text"]},
                }
                headers = [("content-type", b"application/json"), ("labelstream-version", b"3")]
                out.append((body["id"].encode(), orjson.dumps(body), headers))
    return out


def measure(codec: int, items: list) -> tuple[float, float]:
    """(CPU seconds, bytes) of turning `items` into produce batches with `codec`."""
    started = time.process_time()
    wire = 0
    builder = Builder(2, codec, 0, -1, -1, -1, BATCH_BYTES)
    for offset, (key, value, headers) in enumerate(items):
        if builder.append(offset, None, key, value, headers) is None:
            wire += len(builder.build())
            builder = Builder(2, codec, 0, -1, -1, -1, BATCH_BYTES)
            builder.append(0, None, key, value, headers)
    wire += len(builder.build())
    return time.process_time() - started, wire


def main() -> None:
    items = records()
    results = {}
    for name, codec in CODECS.items():
        runs = [measure(codec, items) for _ in range(REPEATS)]
        cpu = min(r[0] for r in runs)
        results[name] = {
            "cpu_us_per_message": round(cpu / len(items) * 1e6, 2),
            "bytes_per_message": round(runs[0][1] / len(items), 1),
        }
    plain = results["none"]
    for row in results.values():
        row["bytes_vs_none"] = round(row["bytes_per_message"] / plain["bytes_per_message"], 3)
        row["extra_cpu_us"] = round(row["cpu_us_per_message"] - plain["cpu_us_per_message"], 2)
    table = Table(title=f"output compression: {len(items)} labelled records, 16 KiB batches")
    for column in ("codec", "CPU µs/msg", "extra CPU µs", "bytes/msg", "vs none"):
        table.add_column(column, justify="right")
    for name, row in results.items():
        table.add_row(
            name,
            f"{row['cpu_us_per_message']:.2f}",
            f"{row['extra_cpu_us']:.2f}",
            f"{row['bytes_per_message']:.0f}",
            f"{row['bytes_vs_none']:.2f}",
        )
    Console().print(table)
    out = ROOT / "bench" / "compression.json"
    out.write_text(json.dumps({"messages": len(items), "codecs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
