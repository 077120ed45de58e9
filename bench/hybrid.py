"""Serving cost per text of a hybrid version against the same version served plain, one run.

Every arm runs through `contracts/serving.py`, the recipe model.py runs inside Triton (ONNX
Runtime directly, no server): `plain` is the version with its TF-IDF model detached
(`model.onnx` only), `hybrid` is the version as served (`model.onnx` + `tfidf.onnx`, blended),
`tfidf` is `tfidf.onnx` alone. Calls of 64 texts (the worker's MAX_BATCH), one intra-op thread
(a CPU instance's share of 2 cores with the default two instances). The arms take turns within
each round, so a busy neighbour slows all three alike; the median round counts.

    python bench/hybrid.py --version-dir triton_models/news_hybrid/1 \
        --data ../shared/data/ag_news/train.tsv --texts 512 --rounds 5

Prints a table and writes bench/hybrid.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from contracts import serving
from trainer.repository import read_model_config

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def read_texts(path: Path, count: int) -> list[str]:
    """The last `count` texts of a TSV with a `text` column (the end of the file, away from the
    first rows a capped training run reads first)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row["text"] for row in csv.DictReader(handle, delimiter="\t")]
    return rows[-count:]


def timed(run: Callable[[Sequence[str]], object], texts: list[str]) -> tuple[float, float]:
    """(wall s, process CPU s) of `run` over `texts` in calls of BATCH texts."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), BATCH):
        run(texts[start : start + BATCH])
    return time.perf_counter() - wall, time.process_time() - cpu


def arms(version_dir: Path, threads: int) -> dict[str, Callable[[Sequence[str]], object]]:
    """The three ways of serving one version's texts, loaded once each."""
    config = read_model_config(version_dir.parent)
    hybrid = serving.ServedModel.load(version_dir, config, threads=threads, log_severity=3)
    if hybrid.hybrid is None:
        raise SystemExit(f"{version_dir} is not a hybrid version (no `hybrid` in classifier.json)")
    plain = serving.ServedModel.load(version_dir, config, threads=threads, log_severity=3)
    plain.hybrid = None
    tfidf = hybrid.hybrid
    return {
        "plain": lambda batch: plain.run(batch, with_embedding=False),
        "hybrid": lambda batch: hybrid.run(batch, with_embedding=False),
        "tfidf": tfidf.probs,
    }


def measure(version_dir: Path, texts: list[str], rounds: int, threads: int) -> dict:
    """Median per-text wall and CPU ms of each arm over `rounds` interleaved rounds."""
    runners = arms(version_dir, threads)
    for run in runners.values():  # warm-up: first-run allocations are not serving cost
        timed(run, texts[:BATCH])
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            samples[name].append(timed(run, texts))
    results = {}
    for name, pairs in samples.items():
        results[name] = {
            "wall_ms_per_text": round(
                1000 * statistics.median(w for w, _ in pairs) / len(texts), 3
            ),
            "cpu_ms_per_text": round(1000 * statistics.median(c for _, c in pairs) / len(texts), 3),
            "rounds_wall_s": [round(w, 3) for w, _ in pairs],
        }
    base = results["plain"]["wall_ms_per_text"]
    for result in results.values():
        result["wall_vs_plain"] = round(result["wall_ms_per_text"] / base, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ag_news/train.tsv")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "hybrid.json")
    args = parser.parse_args()

    texts = read_texts(args.data, args.texts)
    results = measure(args.version_dir, texts, args.rounds, args.threads)
    classifier = serving.read_json(args.version_dir / serving.CLASSIFIER_FILE)
    table = Table(title=f"serving cost per text, {len(texts)} texts × {args.rounds} rounds")
    for column in ("arm", "wall ms/text", "CPU ms/text", "wall vs plain"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, result in results.items():
        table.add_row(
            name,
            f"{result['wall_ms_per_text']:.3f}",
            f"{result['cpu_ms_per_text']:.3f}",
            f"{result['wall_vs_plain']:.2f}",
        )
    Console().print(table)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version_dir": str(args.version_dir),
        "data": str(args.data),
        "texts": len(texts),
        "rounds": args.rounds,
        "threads": args.threads,
        "batch": BATCH,
        "max_length": classifier.get("max_length"),
        "hybrid": {key: classifier["hybrid"].get(key) for key in ("weight", "setup", "features")},
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
