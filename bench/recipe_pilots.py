"""Pilot runs of the recipe options (issue 17): one short fine-tuning per variant on the same
AG News rows, split, seed and steps, each with its validation accuracy.

Pilots, not acceptance figures: a few hundred steps on 2,000 rows say whether an option is
worth a full run, not what the full run reaches. Every variant runs the news preset with
length-grouped batches, validates every `--eval-every` steps without early stopping, and ends
with the weights the loop keeps (the best validation, or the average with `average_last`).
Results are merged by variant into bench/recipe_pilots.json; one variant per call keeps each
run short on the shared cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ag_news" / "train.tsv"
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "layer_lr_decay": {"layer_lr_decay": 0.85},
    "head_lr": {"head_lr_multiplier": 10.0},
    "label_smoothing": {"label_smoothing": 0.1},
    "average_last": {"average_last": 3},
}


def pilot(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune one variant and score the weights it ends with on the validation rows."""
    import torch

    from trainer.data import load_split
    from trainer.export import base_tokenizer_json, serving_tokenizer
    from trainer.loop import evaluate, fine_tune
    from trainer.modeling import build_classifier
    from trainer.options import TrainOptions
    from trainer.settings import packaged_base_model
    from trainer.tasks import get_task
    from trainer.train import set_seed

    torch.set_num_threads(args.threads)
    labels = get_task("news").labels
    options = TrainOptions.for_task(
        "news",
        max_steps=args.steps,
        eval_every=args.eval_every,
        patience=0,
        seed=args.seed,
        torch_threads=args.threads,
        group_by_length=True,
        progress=False,
        **VARIANTS[variant],
    )
    split = load_split(DATA, labels, options.validation_fraction, args.seed)
    train, validation = split.train[: args.rows], split.validation[: args.eval_rows]
    tokenizer = serving_tokenizer(base_tokenizer_json(packaged_base_model()), options.max_length)
    set_seed(args.seed)
    model = build_classifier(packaged_base_model(), labels, "mean")
    started = time.perf_counter()
    stats = fine_tune(model, tokenizer, train, options, validation, len(labels))
    scores = evaluate(model, tokenizer, validation, len(labels), options.eval_batch_size)
    return {
        "variant": variant,
        "options": VARIANTS[variant],
        "accuracy": round(scores["accuracy"], 4),
        "macro_f1": round(scores["macro_f1"], 4),
        "best_step": stats.best_step,
        "evaluations": stats.evaluations,
        "weight_average": stats.weight_average,
        "seconds": round(time.perf_counter() - started, 1),
        "train_rows": len(train),
        "validation_rows": len(validation),
        "steps": stats.steps,
        "seed": args.seed,
        "recipe": {k: v for k, v in dataclasses.asdict(options).items() if k != "progress"},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "recipe_pilots.json")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for variant in args.variants:
        results[variant] = pilot(variant, args)
        row = results[variant]
        print(
            f"{variant}: accuracy {row['accuracy']} macro-F1 {row['macro_f1']} ({row['seconds']} s)"
        )
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
