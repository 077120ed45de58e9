"""INT8 beside fp32 for one trained version: accuracy on its validation rows and CPU cost per
text, measured in one run.

The version's `model.onnx` (fp32) is quantized with the trainer's own recipe
(`trainer.quantize.quantize_int8`, dynamic per-channel MatMul weights) into a scratch copy of
the version directory, and both are served through `contracts/serving.py`, the recipe model.py
runs inside Triton. A hybrid version is scored both blended (as served) and transformer-only.
The arms take turns within each round, so a busy neighbour slows both alike; the median round
counts.

    python bench/int8.py --version-dir triton_models/news_topic/2
    python bench/int8.py --version-dir triton_models/review_sentiment/2 \
        --validation-data ../shared/data/sst2/dev.tsv

Prints a table and writes bench/int8.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from contracts import serving
from trainer.data import training_split
from trainer.quantize import quantize_int8
from trainer.repository import read_model_config
from trainer.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
INT8_ONNX = "model.int8.onnx"


def validation_rows(
    version_dir: Path, validation_data: Path | None
) -> tuple[list[str], np.ndarray]:
    """The validation rows the version was scored on: its metrics.json names the data, split
    fraction and seed (or give the separate validation file it was trained with)."""
    metrics = serving.read_json(version_dir / "metrics.json")
    options = metrics["options"]
    labels = get_task(serving.read_json(version_dir / "classifier.json")["task"]).labels
    split = training_split(
        Path(metrics["data"]),
        labels,
        options["validation_fraction"],
        options["seed"],
        validation_data,
    )
    texts = [example.text for example in split.validation]
    return texts, np.array([example.label for example in split.validation])


def scratch_version(version_dir: Path, scratch: Path) -> Path:
    """A copy of the version's files (links) plus its INT8 model, under the same config."""
    (scratch / "config.pbtxt").symlink_to(version_dir.parent.resolve() / "config.pbtxt")
    copy = scratch / version_dir.name
    copy.mkdir()
    for path in version_dir.iterdir():
        if path.is_file():
            (copy / path.name).symlink_to(path.resolve())
    quantize_int8(version_dir / serving.SERVED_ONNX, copy / INT8_ONNX)
    return copy


def run_batches(model: serving.ServedModel, texts: list[str]) -> tuple[np.ndarray, float, float]:
    """(probs, wall s, process CPU s) over `texts` in calls of BATCH texts."""
    wall, cpu = time.perf_counter(), time.process_time()
    probs = [
        model.run(texts[i : i + BATCH], with_embedding=False)[0]
        for i in range(0, len(texts), BATCH)
    ]
    return np.concatenate(probs), time.perf_counter() - wall, time.process_time() - cpu


def measure(version: Path, texts: list[str], truth: np.ndarray, rounds: int, threads: int) -> dict:
    """Per arm: accuracy (served, and transformer-only for a hybrid) and median cost per text."""
    config = read_model_config(version.parent)
    arms = {
        precision: serving.ServedModel.load(
            version, config, onnx_name=name, threads=threads, log_severity=3
        )
        for precision, name in (("fp32", serving.SERVED_ONNX), ("int8", INT8_ONNX))
    }
    for model in arms.values():  # warm-up: first-run allocations are not serving cost
        run_batches(model, texts[:BATCH])
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    probs: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, model in arms.items():
            out, wall, cpu = run_batches(model, texts)
            probs.setdefault(name, out)
            samples[name].append((wall, cpu))
    results = {}
    for name, model in arms.items():
        entry = {
            "accuracy": float(np.mean(probs[name].argmax(1) == truth)),
            "wall_ms_per_text": 1000 * statistics.median(w for w, _ in samples[name]) / len(texts),
            "cpu_ms_per_text": 1000 * statistics.median(c for _, c in samples[name]) / len(texts),
        }
        if model.hybrid is not None:
            blend, model.hybrid = model.hybrid, None
            entry["transformer_accuracy"] = float(
                np.mean(run_batches(model, texts)[0].argmax(1) == truth)
            )
            model.hybrid = blend
        results[name] = entry
    fp32 = results["fp32"]
    for entry in results.values():
        entry["accuracy_delta_points"] = round(100 * (entry["accuracy"] - fp32["accuracy"]), 2)
        entry["cpu_speedup_vs_fp32"] = round(fp32["cpu_ms_per_text"] / entry["cpu_ms_per_text"], 3)
        entry["wall_speedup_vs_fp32"] = round(
            fp32["wall_ms_per_text"] / entry["wall_ms_per_text"], 3
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--validation-data", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "int8.json")
    args = parser.parse_args()

    texts, truth = validation_rows(args.version_dir, args.validation_data)
    with tempfile.TemporaryDirectory() as scratch:
        version = scratch_version(args.version_dir, Path(scratch))
        results = measure(version, texts, truth, args.rounds, args.threads)
    table = Table(title=f"fp32 vs int8, {len(texts)} validation texts × {args.rounds} rounds")
    for column in ("arm", "accuracy", "Δ points", "CPU ms/text", "CPU speed-up"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, entry in results.items():
        table.add_row(
            name,
            f"{entry['accuracy']:.4f}",
            f"{entry['accuracy_delta_points']:+.2f}",
            f"{entry['cpu_ms_per_text']:.3f}",
            f"{entry['cpu_speedup_vs_fp32']:.2f}x",
        )
    Console().print(table)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version_dir": str(args.version_dir),
        "texts": len(texts),
        "rounds": args.rounds,
        "threads": args.threads,
        "batch": BATCH,
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
