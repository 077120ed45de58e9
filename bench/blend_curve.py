"""Diagnostic only: a hybrid version's blend scored at every grid weight on its validation rows.

The trainer never chooses the weight this way (it chooses on held-out training rows, see
trainer/hybrid.py); this curve shows how far that choice is from the best weight in hindsight,
and the ceiling of the blend on these rows. Both models run through `contracts/serving.py`.

    python bench/blend_curve.py --version-dir triton_models/news_topic/2

Prints a table and writes bench/blend_curve.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from int8 import validation_rows  # bench/int8.py: the script's own folder is on sys.path
from rich.console import Console
from rich.table import Table

from contracts import serving
from trainer.hybrid import WEIGHT_GRID
from trainer.repository import read_model_config

ROOT = Path(__file__).resolve().parents[1]


def curve(version_dir: Path, validation_data: Path | None, threads: int) -> dict:
    """Accuracy and log-loss of the blend at each grid weight, and the weight the trainer chose."""
    texts, truth = validation_rows(version_dir, validation_data)
    served = serving.ServedModel.load(
        version_dir, read_model_config(version_dir.parent), threads=threads, log_severity=3
    )
    if served.hybrid is None:
        raise SystemExit(f"{version_dir} is not a hybrid version (no `hybrid` in classifier.json)")
    tfidf, served.hybrid = served.hybrid, None
    transformer = served.run(texts, with_embedding=False)[0]
    tfidf_probs = tfidf.probs(texts)
    rows = np.arange(len(truth))
    points = []
    for weight in WEIGHT_GRID:
        blend = serving.blend(transformer, tfidf_probs, weight).astype(np.float64)
        points.append(
            {
                "weight": weight,
                "accuracy": float(np.mean(blend.argmax(1) == truth)),
                "log_loss": float(-np.mean(np.log(np.clip(blend[rows, truth], 1e-7, 1.0)))),
            }
        )
    return {"texts": len(texts), "chosen_weight": tfidf.weight, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--validation-data", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "blend_curve.json")
    args = parser.parse_args()

    result = curve(args.version_dir, args.validation_data, args.threads)
    table = Table(title=f"blend on {result['texts']} validation rows (diagnostic only)")
    for column in ("w (transformer)", "accuracy", "log-loss", ""):
        table.add_column(column, justify="right")
    for point in result["points"]:
        mark = "chosen" if point["weight"] == result["chosen_weight"] else ""
        table.add_row(
            f"{point['weight']:.2f}", f"{point['accuracy']:.4f}", f"{point['log_loss']:.4f}", mark
        )
    Console().print(table)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version_dir": str(args.version_dir),
        **result,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
