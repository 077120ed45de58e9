"""`make bench-epoch`: one training epoch with shuffled batches against batches grouped by token
length (`--group-by-length`), on the same AG News rows, in one run.

Each mode trains its own copy of the same initial model with the news preset's batch size,
length cap and LR; their steps alternate (one of each in turn), so load from other processes on
the shared cores falls on both alike. An epoch's time counts tokenizing its batches and its
steps. Also counts the tokens an epoch computes, padding included, on every row (no model
needed), and times one validation pass in order against one sorted by length (`evaluate`).
Prints a table and writes bench/epoch_time.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ag_news" / "train.tsv"
MODES = ("shuffled", "grouped")


def padded_tokens(lengths: Sequence[int], plan: list[list[int]]) -> int:
    """Tokens a plan of batches computes: each batch is as wide as its longest row."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in plan)


def timed(generator: Iterator[Any]) -> Iterator[tuple[Any, float]]:
    """Each item with the seconds it took to make (here: tokenizing a batch)."""
    while True:
        tick = time.perf_counter()
        try:
            item = next(generator)
        except StopIteration:
            return
        yield item, time.perf_counter() - tick


def train_step(
    model: Any, optimizer: Any, scheduler: Any, batch: Any, max_grad_norm: float
) -> float:
    """One step as `FineTuning._step` takes it; its seconds."""
    from trainer.loop import training_loss

    ids, mask, labels = batch
    tick = time.perf_counter()
    loss = training_loss(model(input_ids=ids, attention_mask=mask).logits, labels, 0.0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - tick


def epochs(args: argparse.Namespace) -> dict[str, Any]:
    """Both modes' epochs, interleaved step by step, and the padding counts on all rows."""
    from trainer.data import read_examples
    from trainer.export import base_tokenizer_json, serving_tokenizer
    from trainer.loop import batch_indices, batches, make_optimizer, token_lengths
    from trainer.modeling import build_classifier
    from trainer.options import TrainOptions
    from trainer.settings import packaged_base_model
    from trainer.tasks import get_task

    labels = get_task("news").labels
    options = TrainOptions.for_task("news", seed=args.seed)
    examples = read_examples(DATA, labels)
    rows = examples[: args.rows]
    tokenizer = serving_tokenizer(base_tokenizer_json(packaged_base_model()), options.max_length)
    lengths = token_lengths(tokenizer, [example.text for example in examples])
    size = options.batch_size
    plans = {
        "shuffled": batch_indices(len(examples), size, random.Random(args.seed)),
        "grouped": batch_indices(len(examples), size, random.Random(args.seed), lengths),
    }
    result: dict[str, Any] = {
        mode: {
            "all_rows": len(examples),
            "computed_tokens_all_rows": padded_tokens(lengths, plan),
            "real_tokens_all_rows": sum(lengths),
        }
        for mode, plan in plans.items()
    }
    runs = {}
    for mode in MODES:
        torch.manual_seed(args.seed)
        model = build_classifier(packaged_base_model(), labels, "mean").train()
        optimizer, scheduler = make_optimizer(model, options, total_steps=10_000)
        grouped = token_lengths(tokenizer, [e.text for e in rows]) if mode == "grouped" else None
        stream = batches(rows, tokenizer, size, random.Random(args.seed), grouped)
        runs[mode] = (model, optimizer, scheduler, timed(stream), [], [], [])
    for _ in range(args.steps or len(rows)):
        active = 0
        for model, optimizer, scheduler, stream, steps, tokenize, widths in runs.values():
            item = next(stream, None)
            if item is None:
                continue
            batch, seconds = item
            tokenize.append(seconds)
            widths.append(batch[0].shape[1])
            steps.append(train_step(model, optimizer, scheduler, batch, options.max_grad_norm))
            active += 1
        print(f"step {len(steps)}", file=sys.stderr, flush=True)
        if not active:
            break
    for mode, (model, _, _, _, steps, tokenize, widths) in runs.items():
        result[mode].update(
            rows=len(rows),
            steps=len(steps),
            # The mean step (tokenizing included) times the steps of a whole epoch: measured
            # when `steps` covers the epoch, an estimate from a random sample of it otherwise.
            epoch_seconds=round(
                statistics.fmean(map(sum, zip(steps, tokenize, strict=True)))
                * math.ceil(len(rows) / size),
                1,
            ),
            whole_epoch=len(steps) == math.ceil(len(rows) / size),
            median_step_seconds=round(statistics.median(steps), 3),
            mean_batch_width=round(statistics.mean(widths), 1),
        )
        if args.eval_rows and mode == "grouped":
            result["validation"] = validation_passes(model, tokenizer, examples[-args.eval_rows :])
    return result


def validation_passes(model: Any, tokenizer: Any, examples: Sequence[Any]) -> dict[str, float]:
    """Seconds of one validation pass in file order (as before) and sorted by length (now)."""
    from trainer.loop import batches, evaluate

    model.eval()
    tick = time.perf_counter()
    with torch.no_grad():
        for ids, mask, _ in batches(examples, tokenizer, 64):
            model(input_ids=ids, attention_mask=mask)
    in_order = time.perf_counter() - tick
    tick = time.perf_counter()
    evaluate(model, tokenizer, examples, 4, 64)
    return {
        "rows": len(examples),
        "in_order_seconds": round(in_order, 2),
        "sorted_seconds": round(time.perf_counter() - tick, 2),
    }


def show(result: dict[str, Any]) -> None:
    table = Table(title="One epoch, news preset (batch 32, max 128 tokens)")
    for column in ("batches", "rows", "steps", "s/epoch", "median s/step", "mean width"):
        table.add_column(column)
    table.add_column("computed/real tokens, all rows")
    for mode in MODES:
        row = result[mode]
        ratio = row["computed_tokens_all_rows"] / row["real_tokens_all_rows"]
        table.add_row(
            mode,
            str(row["rows"]),
            str(row["steps"]),
            f"{row['epoch_seconds']:.1f}",
            f"{row['median_step_seconds']:.3f}",
            f"{row['mean_batch_width']:.1f}",
            f"{ratio:.2f}",
        )
    console = Console()
    console.print(table)
    speedup = result["shuffled"]["epoch_seconds"] / result["grouped"]["epoch_seconds"]
    console.print(f"grouped epoch is {speedup:.2f}x as fast")
    if "validation" in result:
        console.print(f"validation pass: {result['validation']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="AG News rows per epoch")
    parser.add_argument("--steps", type=int, default=0, help="cap the steps per mode (0: epoch)")
    parser.add_argument("--eval-rows", type=int, default=500, help="rows of the timed validation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "epoch_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = epochs(args)
    result["run"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "seed": args.seed,
        "command": "bench/epoch_time.py " + " ".join(f"--{k}={v}" for k, v in vars(args).items()),
    }
    show(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
