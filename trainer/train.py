"""Fine-tune the base model on a task, evaluate it, export it and write a new model version.

Reads top to bottom like a recipe (in the spirit of transformers' run_glue.py):
settings -> seeds and threads -> data -> tokenizer and model -> optimizer and schedule ->
training loop -> evaluation -> ONNX export + parity check -> atomic version write.
Everything runs in-process so tests and demos can call `train_and_export` directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from sklearn.metrics import accuracy_score, f1_score
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from trainer.data import Example, load_split
from trainer.export import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    PAD_TOKEN,
    base_tokenizer_json,
    check_parity,
    export_onnx,
    serving_tokenizer,
)
from trainer.repository import write_version
from trainer.settings import TrainerSettings, force_offline_hub
from trainer.tasks import Task, get_task

log = structlog.get_logger(__name__)


@dataclass
class TrainOptions:
    """Knobs of one training run; `seed`/`torch_threads` left `None` come from TrainerSettings."""

    max_steps: int | None = None
    epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    validation_fraction: float = 0.1
    seed: int | None = None
    torch_threads: int | None = None
    parity_texts: int = 6
    progress: bool = True

    @classmethod
    def from_kwargs(cls, **options: Any) -> TrainOptions:
        """Like the constructor, but ignores `None` values and names unknown options clearly."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**{key: value for key, value in options.items() if value is not None})


@dataclass
class TrainStats:
    """What the loop did, recorded in metrics.json so slow or unstable runs are visible."""

    steps: int
    epochs_run: int
    seconds: float
    seconds_per_step: float
    final_loss: float


def set_seed(seed: int) -> None:
    """Seed every RNG that touches the run (classifier init, dropout, shuffling)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_torch(threads: int) -> None:
    """Pin torch's thread pools: on 2 shared cores the default oversubscribes and a step
    can take several times longer."""
    torch.set_num_threads(threads)
    # Fails once the pool exists (earlier parallel work in this process); harmless then.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def load_model(base_model: Path, task: Task) -> nn.Module:
    """The base checkpoint with a fresh classification head for the task's labels; offline."""
    force_offline_hub()
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=len(task.labels),
        id2label=dict(enumerate(task.labels)),
        label2id={label: index for index, label in enumerate(task.labels)},
        local_files_only=True,
        attn_implementation="sdpa",
    )


def batches(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int,
    rng: random.Random | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, labels) batches, padded to the longest row; shuffled if rng."""
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [examples[index] for index in order[start : start + batch_size]]
        encodings = tokenizer.encode_batch([example.text for example in chunk])
        yield (
            torch.tensor([e.ids for e in encodings], dtype=torch.int64),
            torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            torch.tensor([example.label for example in chunk], dtype=torch.int64),
        )


def make_optimizer(
    model: nn.Module, options: TrainOptions, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW without decay on biases/LayerNorm, linear warmup then linear decay to zero."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": options.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=options.learning_rate,
    )
    warmup = int(options.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fine_tune(
    model: nn.Module, tokenizer: Tokenizer, train: Sequence[Example], options: TrainOptions
) -> TrainStats:
    """Standard supervised fine-tuning loop; stops at `max_steps` if set, else after `epochs`."""
    steps_per_epoch = math.ceil(len(train) / options.batch_size)
    total_steps = options.max_steps or options.epochs * steps_per_epoch
    optimizer, scheduler = make_optimizer(model, options, total_steps)
    rng = random.Random(options.seed)

    model.train()
    step, epoch, loss_value = 0, 0, float("nan")
    step_seconds: list[float] = []
    started = time.perf_counter()
    with tqdm(total=total_steps, desc="train", unit="step", disable=not options.progress) as bar:
        while step < total_steps:
            epoch += 1
            for input_ids, attention_mask, labels in batches(
                train, tokenizer, options.batch_size, rng
            ):
                tick = time.perf_counter()
                out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_seconds.append(time.perf_counter() - tick)
                loss_value = float(out.loss.detach())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch)
                if step >= total_steps:
                    break
    model.eval()
    return TrainStats(
        steps=step,
        epochs_run=epoch,
        seconds=time.perf_counter() - started,
        seconds_per_step=statistics.median(step_seconds),
        final_loss=loss_value,
    )


def evaluate(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    num_labels: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy and macro-F1 (all labels, absent ones count as 0) on held-out examples."""
    model.eval()
    predictions: list[int] = []
    with torch.no_grad():
        for input_ids, attention_mask, _labels in batches(examples, tokenizer, batch_size):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            predictions.extend(logits.argmax(dim=-1).tolist())
    truth = [example.label for example in examples]
    return {
        "accuracy": float(accuracy_score(truth, predictions)),
        "macro_f1": float(
            f1_score(
                truth, predictions, average="macro", labels=list(range(num_labels)), zero_division=0
            )
        ),
        "examples": len(examples),
    }


def parity_texts(validation: Sequence[Example], count: int) -> list[str]:
    """Real texts plus the edge cases serving sees: replaced bytes and over-long input."""
    texts = [example.text for example in validation[:count]]
    return [*texts, b"caf\xc3 \xff broken bytes".decode("utf-8", errors="replace"), "word " * 600]


def train_and_export(
    task: str,
    data: Path,
    repository: Path | None = None,
    model_name: str | None = None,
    *,
    settings: TrainerSettings | None = None,
    **options: Any,
) -> Path:
    """Train, evaluate, export and write the next version of `model_name`; returns its dir.

    `options` are `TrainOptions` fields (max_steps, max_length, batch_size, epochs, ...).
    """
    settings = settings or TrainerSettings()
    opts = TrainOptions.from_kwargs(**options)
    opts.seed = settings.seed if opts.seed is None else opts.seed
    opts.torch_threads = opts.torch_threads or settings.torch_threads
    spec = get_task(task)
    repository = Path(repository or settings.repository)
    model_name = model_name or spec.default_model_name
    run_log = log.bind(task=spec.name, model=model_name)

    set_seed(opts.seed)
    configure_torch(opts.torch_threads)

    split = load_split(Path(data), spec.labels, opts.validation_fraction, opts.seed)
    train = split.train[: opts.max_train_samples] if opts.max_train_samples else split.train
    validation = (
        split.validation[: opts.max_eval_samples] if opts.max_eval_samples else split.validation
    )
    run_log.info(
        "train.start",
        train_examples=len(train),
        validation_examples=len(validation),
        torch_threads=opts.torch_threads,
        options=dataclasses.asdict(opts),
    )

    tokenizer_json = base_tokenizer_json(settings.base_model)
    tokenizer = serving_tokenizer(tokenizer_json, opts.max_length)
    model = load_model(settings.base_model, spec)

    stats = fine_tune(model, tokenizer, train, opts)
    run_log.info("train.trained", **dataclasses.asdict(stats))
    scores = evaluate(model, tokenizer, validation, len(spec.labels), opts.eval_batch_size)
    run_log.info("train.evaluated", **scores)

    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    classifier = {
        "task": spec.name,
        "model_name": model_name,
        "labels": list(spec.labels),
        "max_length": opts.max_length,
        "pad_token": PAD_TOKEN,
        "pad_id": tokenizer.token_to_id(PAD_TOKEN) or 0,
        "embedding_dim": int(model.config.hidden_size),
        "embedding_pooling": "mean",
        "embedding_normalized": False,
        "onnx": {"inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "opset": OPSET},
        "base_model": str(getattr(model.config, "_name_or_path", "") or settings.base_model),
        "created_at": created_at,
    }
    metrics: dict[str, Any] = {
        **scores,
        "train_examples": len(train),
        "steps": stats.steps,
        "epochs_run": stats.epochs_run,
        "train_seconds": round(stats.seconds, 3),
        "seconds_per_step": round(stats.seconds_per_step, 4),
        "final_loss": stats.final_loss,
        "options": dataclasses.asdict(opts),
        "data": str(data),
        "created_at": created_at,
    }

    def build(staging: Path) -> None:
        """Export into the staging dir; a failed parity check aborts the version."""
        started = time.perf_counter()
        (staging / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        published_tokenizer = serving_tokenizer(
            (staging / "tokenizer.json").read_text(encoding="utf-8"), opts.max_length
        )
        export_onnx(model, published_tokenizer, staging / "model.onnx")
        metrics["parity_max_abs_prob_diff"] = check_parity(
            model,
            staging / "model.onnx",
            published_tokenizer,
            parity_texts(validation, opts.parity_texts),
        )
        metrics["export_seconds"] = round(time.perf_counter() - started, 3)

    version_dir = write_version(
        repository,
        model_name,
        build,
        labels=spec.labels,
        classifier=classifier,
        metrics=metrics,
    )
    run_log.info("train.version_written", version_dir=str(version_dir), **scores)
    return version_dir
