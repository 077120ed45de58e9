"""Fine-tune the base model on a task, evaluate it, export it and write a new model version.

Reads top to bottom like a recipe (in the spirit of transformers' run_glue.py):
settings -> label-set guard -> seeds and threads -> data -> tokenizer and model -> optimizer
and schedule -> training loop (periodic validation, early stopping on macro-F1, best weights
kept, resumable checkpoints) -> evaluation -> ONNX export + parity check -> atomic version write.
Everything runs in-process so tests and demos can call `train_and_export` directly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
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
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from contracts.reference import write_reference
from trainer.baseline import tfidf_baseline
from trainer.checkpoint import Checkpoint, LoopState, run_id
from trainer.data import Columns, Example, load_split, separate_validation
from trainer.export import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    PAD_TOKEN,
    ClassifierWithEmbedding,
    base_tokenizer_json,
    check_parity,
    export_onnx,
    serving_tokenizer,
)
from trainer.metrics import classification_metrics, classification_scores
from trainer.modeling import build_classifier
from trainer.onnx_runner import OnnxClassifier
from trainer.quantize import Precision, compare_variants, install_variant
from trainer.reference import reference_statistics
from trainer.report import write_report
from trainer.repository import (
    RepositoryError,
    data_fingerprint,
    gpu_render_options,
    instance_kind,
    latest_version,
    model_path,
    prune_versions,
    write_config,
    write_version,
    write_warmup_text,
)
from trainer.settings import TrainerSettings, force_offline_hub
from trainer.tasks import Task, get_task

log = structlog.get_logger(__name__)

# Steps timed before a time budget is turned into a step count.
FIT_AFTER_STEPS = 20


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
    eval_every: int | None = None
    """Validate every this many steps; default once per epoch (and always at the end)."""
    patience: int | None = 3
    """Stop after this many validations without a macro-F1 gain; None never stops early."""
    head: str = "mean"
    """Classifier head: "mean" (linear on mean-pooled tokens) or "cls" (BERT pooler)."""
    max_minutes: float | None = None
    """Time budget for the loop: validate once more and stop when it is spent."""

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
    best_step: int = 0
    best_macro_f1: float | None = None
    stopped_early: bool = False
    resumed_from_step: int = 0
    stopped_by_budget: bool = False
    evaluations: list[dict[str, float]] = dataclasses.field(default_factory=list)


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


def load_model(base_model: Path, task: Task, head: str = "mean") -> nn.Module:
    """The base checkpoint with a fresh classification head for the task's labels; offline."""
    force_offline_hub()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return build_classifier(base_model, task.labels, head)


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


class LinearSchedule:
    """Linear warmup then linear decay to zero at `total` steps.

    A callable object rather than a closure, so the LR scheduler's state_dict saves `total`:
    a run whose schedule was shortened to fit its time budget resumes with the same schedule.
    """

    def __init__(self, total: int, warmup_ratio: float) -> None:
        self.total = total
        self.warmup = int(warmup_ratio * total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


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
    schedule = LinearSchedule(total_steps, options.warmup_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def fit_to_budget(step: int, total_steps: int, seconds_left: float, seconds_per_step: float) -> int:
    """The step count the remaining time affords (10% kept for validation and export)."""
    affordable = step + int(0.9 * max(0.0, seconds_left) / max(seconds_per_step, 1e-9))
    return max(step + 1, min(total_steps, affordable))


def fine_tune(
    model: nn.Module,
    tokenizer: Tokenizer,
    train: Sequence[Example],
    options: TrainOptions,
    validation: Sequence[Example] = (),
    num_labels: int = 0,
    checkpoint: Checkpoint | None = None,
) -> TrainStats:
    """Supervised fine-tuning; stops at `max_steps` if set, else after `epochs`, or early.

    With a validation set, macro-F1 is measured every `eval_every` steps; the best weights are
    kept and restored at the end, and `patience` validations without a gain stop the run.
    With a checkpoint, the state is saved at every validation and resumed on the next start.
    """
    steps_per_epoch = math.ceil(len(train) / options.batch_size)
    total_steps = options.max_steps or options.epochs * steps_per_epoch
    eval_every = options.eval_every or min(steps_per_epoch, total_steps)
    optimizer, scheduler = make_optimizer(model, options, total_steps)
    rng = random.Random(options.seed)

    state = checkpoint.load(model, optimizer, scheduler) if checkpoint else None
    resumed_from = state.step if state else 0
    state = state or LoopState()
    best_weights = checkpoint.best_state_dict() if checkpoint and resumed_from else None
    stopped_early = stopped_by_budget = False
    deadline = started_at = time.monotonic()
    if options.max_minutes:
        deadline = started_at + 60 * options.max_minutes
    loss_value = float("nan")
    step_seconds: list[float] = []
    started = time.perf_counter()

    model.train()
    with tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not options.progress,
    ) as bar:
        while state.step < total_steps and not stopped_early:
            if state.batch_in_epoch == 0:
                state.epoch += 1
                state.epoch_rng_state = rng.getstate()
            else:
                rng.setstate(state.epoch_rng_state)
            epoch_batches = batches(train, tokenizer, options.batch_size, rng)
            for index, (input_ids, attention_mask, labels) in enumerate(epoch_batches):
                if index < state.batch_in_epoch:
                    continue
                tick = time.perf_counter()
                out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_seconds.append(time.perf_counter() - tick)
                loss_value = float(out.loss.detach())
                state.step += 1
                state.batch_in_epoch = index + 1
                if options.max_minutes and len(step_seconds) == FIT_AFTER_STEPS:
                    total_steps = _shorten(
                        scheduler, state.step, total_steps, deadline, step_seconds
                    )
                    bar.total = total_steps
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", epoch=state.epoch)
                out_of_time = bool(options.max_minutes) and time.monotonic() > deadline
                if validation and (
                    state.step % eval_every == 0 or state.step == total_steps or out_of_time
                ):
                    gained = _validate(model, tokenizer, validation, num_labels, options, state)
                    if gained:
                        best_weights = copy.deepcopy(model.state_dict())
                    if checkpoint:
                        checkpoint.save(model, optimizer, scheduler, state, best=gained)
                    if options.patience and state.evals_without_gain >= options.patience:
                        stopped_early = True
                        break
                if out_of_time:
                    stopped_by_budget = stopped_early = True
                    log.warning(
                        "train.time_budget_spent", step=state.step, minutes=options.max_minutes
                    )
                    break
                if state.step >= total_steps:
                    break
            else:
                state.batch_in_epoch = 0
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return TrainStats(
        steps=state.step,
        epochs_run=state.epoch,
        seconds=time.perf_counter() - started,
        seconds_per_step=statistics.median(step_seconds) if step_seconds else 0.0,
        final_loss=loss_value,
        best_step=state.best_step,
        best_macro_f1=state.best_macro_f1 if state.evaluations else None,
        stopped_early=stopped_early,
        stopped_by_budget=stopped_by_budget,
        resumed_from_step=resumed_from,
        evaluations=state.evaluations,
    )


def _shorten(
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    step: int,
    total_steps: int,
    deadline: float,
    step_seconds: list[float],
) -> int:
    """Fit the LR schedule to the time budget, so a slow machine still ends its decay."""
    fitted = fit_to_budget(
        step, total_steps, deadline - time.monotonic(), statistics.median(step_seconds)
    )
    if fitted < total_steps:
        for schedule in scheduler.lr_lambdas:
            schedule.total = fitted
        log.warning(
            "train.schedule_fitted_to_budget",
            planned_steps=total_steps,
            steps=fitted,
            seconds_per_step=round(statistics.median(step_seconds), 3),
        )
    return fitted


def _validate(
    model: nn.Module,
    tokenizer: Tokenizer,
    validation: Sequence[Example],
    num_labels: int,
    options: TrainOptions,
    state: LoopState,
) -> bool:
    """Score the validation set, record it in `state`; True when macro-F1 improved."""
    scores = evaluate(model, tokenizer, validation, num_labels, options.eval_batch_size)
    model.train()
    state.evaluations.append(
        {"step": state.step, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    )
    log.info("train.validation", step=state.step, **scores)
    if scores["macro_f1"] > state.best_macro_f1:
        state.best_macro_f1, state.best_step, state.evals_without_gain = (
            scores["macro_f1"],
            state.step,
            0,
        )
        return True
    state.evals_without_gain += 1
    return False


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
    return {**classification_scores(truth, predictions, num_labels), "examples": len(examples)}


def predict(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and mean-pooled embeddings, computed exactly as the exported graph does."""
    wrapper = ClassifierWithEmbedding(model).eval()
    probs, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encodings = tokenizer.encode_batch(list(texts[start : start + batch_size]))
            batch_probs, batch_embeddings = wrapper(
                torch.tensor([e.ids for e in encodings], dtype=torch.int64),
                torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            )
            probs.append(batch_probs.numpy())
            embeddings.append(batch_embeddings.numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


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
    columns: Columns | None = None,
    validation_data: Path | None = None,
    new_model: bool = False,
    precision: Precision = "fp32",
    device: str = "cpu",
    keep: int | None = None,
    **options: Any,
) -> Path:
    """Train, evaluate, export and write the next version of `model_name`; returns its dir.

    `options` are `TrainOptions` fields (max_steps, max_length, batch_size, epochs, ...).
    `validation_data` replaces the held-out split with a file of its own (e.g. SST-2's dev set);
    `new_model` allows a label set that differs from the model's existing versions;
    `precision` picks the served ONNX variant (int8 for CPU, fp16 for GPU; fp32 is kept beside
    it and both are compared); `device` sets the Triton instance kind; `keep` prunes old versions.
    """
    settings = settings or TrainerSettings()
    spec = get_task(task)
    given = {key: value for key, value in options.items() if value is not None}
    opts = TrainOptions.from_kwargs(**{**spec.training, **given})
    opts.seed = settings.seed if opts.seed is None else opts.seed
    opts.torch_threads = opts.torch_threads or settings.torch_threads
    repository = Path(repository or settings.repository)
    model_name = model_name or spec.default_model_name
    run_log = log.bind(task=spec.name, model=model_name)
    # model_path refuses names that escape the repository, before any training time is spent.
    check_label_set(model_path(repository, model_name), spec.labels, allow_change=new_model)
    fingerprint = data_fingerprint(Path(data))

    set_seed(opts.seed)
    configure_torch(opts.torch_threads)

    if validation_data is None:
        split = load_split(Path(data), spec.labels, opts.validation_fraction, opts.seed, columns)
    else:
        split = separate_validation(Path(data), Path(validation_data), spec.labels, columns)
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
    model = load_model(settings.base_model, spec, opts.head)

    checkpoint = Checkpoint(
        settings.checkpoint_dir,
        run_id(
            task=spec.name,
            model=model_name,
            data=fingerprint,
            columns=dataclasses.asdict(columns or Columns()),
            base_model=str(settings.base_model),
            options={k: v for k, v in dataclasses.asdict(opts).items() if k != "progress"},
        ),
    )
    stats = fine_tune(model, tokenizer, train, opts, validation, len(spec.labels), checkpoint)
    run_log.info("train.trained", **dataclasses.asdict(stats))

    validation_texts = [example.text for example in validation]
    truth = np.array([example.label for example in validation])
    probs, embeddings = predict(model, tokenizer, validation_texts, opts.eval_batch_size)
    scores = classification_metrics(truth, probs, list(spec.labels))
    baseline = tfidf_baseline(
        [example.text for example in train],
        [example.label for example in train],
        validation_texts,
        truth,
        spec.labels,
        seed=opts.seed,
    )
    margin = round(100 * (scores["accuracy"] - baseline["accuracy"]), 2)
    run_log.info(
        "train.evaluated",
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
        ece=scores["ece"],
        baseline_accuracy=baseline["accuracy"],
        margin_points=margin,
    )

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
        "precision": precision,
    }
    metrics: dict[str, Any] = {
        **scores,
        "baseline": {
            key: baseline[key]
            for key in ("name", "setup", "accuracy", "macro_f1", "ece", "fit_seconds")
            if key in baseline
        },
        "margin_over_baseline_points": margin,
        "train_examples": len(train),
        "steps": stats.steps,
        "epochs_run": stats.epochs_run,
        "train_seconds": round(stats.seconds, 3),
        "seconds_per_step": round(stats.seconds_per_step, 4),
        "final_loss": stats.final_loss,
        "best_step": stats.best_step,
        "stopped_early": stats.stopped_early,
        "stopped_by_budget": stats.stopped_by_budget,
        "resumed_from_step": stats.resumed_from_step,
        "validation_curve": stats.evaluations,
        "data_fingerprint": fingerprint,
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
        files = install_variant(staging, precision)
        if len(files) > 1:
            metrics["variants"] = compare_variants(
                files,
                tokenizer_json,
                opts.max_length,
                validation_texts,
                truth,
                num_labels=len(spec.labels),
                threads=opts.torch_threads,
            )
        served = OnnxClassifier.from_files(
            staging / "model.onnx", tokenizer_json, opts.max_length, labels=spec.labels
        )
        served_probs, served_embeddings = served.predict(validation_texts)
        write_reference(
            staging,
            reference_statistics(
                served_probs.argmax(axis=1),
                served_probs,
                validation_texts,
                served_embeddings,
                spec.labels,
                opts.seed,
                truth=truth,
            ),
        )
        write_report(
            staging,
            metrics,
            baseline,
            metrics.get("variants"),
            {
                "model_name": model_name,
                "task": spec.name,
                "created_at": created_at,
                "base_model": classifier["base_model"],
                "data": str(data),
                "data_fingerprint": metrics["data_fingerprint"],
            },
        )

    if instance_kind(device) == "KIND_GPU":
        write_warmup_text(repository / model_name)
        write_config(repository / model_name, model_name, **gpu_render_options())
    version_dir = write_version(
        repository,
        model_name,
        build,
        labels=spec.labels,
        classifier=classifier,
        metrics=metrics,
    )
    checkpoint.remove()
    if keep:
        pruned = prune_versions(repository / model_name, keep)
        run_log.info("train.pruned", versions=pruned, keep=keep)
    run_log.info(
        "train.version_written",
        version_dir=str(version_dir),
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
    )
    return version_dir


def check_label_set(model_dir: Path, labels: Sequence[str], *, allow_change: bool) -> None:
    """A model name keeps one label set: consumers and drift references depend on it."""
    newest = latest_version(model_dir)
    if newest is None or allow_change:
        return
    existing = json.loads((model_dir / str(newest) / "labels.json").read_text(encoding="utf-8"))
    if list(existing) != list(labels):
        raise RepositoryError(
            f"{model_dir.name} version {newest} has labels {existing}, this run has {list(labels)};"
            " train under another --model name, or pass --new-model to change the label set"
        )
