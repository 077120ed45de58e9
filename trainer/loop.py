"""The fine-tuning loop: AdamW with a linear schedule, periodic validation, early stopping on
macro-F1 with the best weights restored, a time budget, and resumable checkpoints.

Recipe options (`TrainOptions`): batches grouped by token length (on by default), layer-wise
LR decay and a head LR multiplier (`parameter_groups`), label smoothing (`training_loss`), and
the average of the last validations' weights (`average_state_dicts`); those four are off by default.

`FineTuning` holds one run's mutable state so that each concern (a step, an epoch, what to do
after a step) is a short method; `fine_tune` is the one call the training recipe makes.
"""

from __future__ import annotations

import copy
import math
import random
import re
import statistics
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from trainer.checkpoint import Checkpoint, LoopState
from trainer.data import Example
from trainer.metrics import classification_scores
from trainer.options import TrainOptions

log = structlog.get_logger(__name__)

# Steps timed before a time budget is turned into a step count.
FIT_AFTER_STEPS = 20
# Batches per chunk that `length_grouped` sorts by length: 2,048 rows at batch size 32.
GROUP_CHUNK_BATCHES = 64
# An encoder layer's parameters: `bert.encoder.layer.3.attention...` is layer 3.
_LAYER = re.compile(r"\.layer\.(\d+)\.")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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
    evaluations: list[dict[str, float]] = field(default_factory=list)
    weight_average: dict[str, float] | None = None
    """The averaged weights' validation scores, and whether they were kept (`used`)."""


def token_lengths(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens per text after truncation, without padding: what a batch of it pads to."""
    return [sum(encoding.attention_mask) for encoding in tokenizer.encode_batch(list(texts))]


def length_grouped(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar length, as transformers' LengthGroupedSampler makes them.

    Shuffle, sort chunks of `GROUP_CHUNK_BATCHES` batches by length, cut them into batches,
    shuffle the batches: a batch pads to little, and each epoch still mixes differently.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = batch_size * GROUP_CHUNK_BATCHES
    grouped: list[list[int]] = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lengths.__getitem__, reverse=True)
        grouped.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(grouped)
    return grouped


def batch_indices(
    count: int,
    batch_size: int,
    rng: random.Random | None = None,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """Rows per batch: in order, shuffled when `rng`, grouped by length when also `lengths`."""
    if rng is not None and lengths is not None:
        return length_grouped(lengths, batch_size, rng)
    order = list(range(count))
    if rng is not None:
        rng.shuffle(order)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def batches(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int,
    rng: random.Random | None = None,
    lengths: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """(input_ids, attention_mask, labels) batches, each padded to its own longest row."""
    for indices in batch_indices(len(examples), batch_size, rng, lengths):
        chunk = [examples[index] for index in indices]
        encodings = tokenizer.encode_batch([example.text for example in chunk])
        yield (
            torch.tensor([e.ids for e in encodings], dtype=torch.int64),
            torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            torch.tensor([example.label for example in chunk], dtype=torch.int64),
        )


def training_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy, with `smoothing` of each target's mass spread evenly over all labels."""
    return nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)


def average_state_dicts(snapshots: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating tensors; integer buffers are taken from the last."""
    last = snapshots[-1]
    return {
        name: torch.stack([snapshot[name] for snapshot in snapshots]).mean(dim=0)
        if value.is_floating_point()
        else value.clone()
        for name, value in last.items()
    }


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


def lr_scale(name: str, num_layers: int, options: TrainOptions) -> float:
    """A parameter's share of the peak LR: the head's multiplier, else `layer_lr_decay` per
    encoder layer below the top one (the top layer 1, the embeddings one step below layer 0)."""
    if "embeddings" in name:
        return options.layer_lr_decay**num_layers
    layer = _LAYER.search(name)
    if layer is None:  # the head: classifier, and BERT's pooler
        return options.head_lr_multiplier
    return options.layer_lr_decay ** (num_layers - 1 - int(layer.group(1)))


def parameter_groups(model: nn.Module, options: TrainOptions) -> list[dict[str, Any]]:
    """One AdamW group per (LR, weight decay); no decay on biases and LayerNorm. Without layer
    decay or a head multiplier these are the two groups of plain AdamW fine-tuning."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim < 2 or "LayerNorm" in name
        key = (
            options.learning_rate * lr_scale(name, num_layers, options),
            0.0 if no_decay else options.weight_decay,
        )
        groups.setdefault(key, []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in groups.items()
    ]


def make_optimizer(
    model: nn.Module, options: TrainOptions, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `parameter_groups`, linear warmup then linear decay to zero (every group)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, options), lr=options.learning_rate)
    schedule = LinearSchedule(total_steps, options.warmup_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def fit_to_budget(step: int, total_steps: int, seconds_left: float, seconds_per_step: float) -> int:
    """The step count the remaining time affords (10% kept for validation and export)."""
    affordable = step + int(0.9 * max(0.0, seconds_left) / max(seconds_per_step, 1e-9))
    return max(step + 1, min(total_steps, affordable))


def evaluate(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    num_labels: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy and macro-F1 (all labels, absent ones count as 0) on held-out examples.

    Rows go in order of length (the scores do not depend on the order), so batches pad little.
    """
    model.eval()
    examples = sorted(examples, key=lambda example: len(example.text))
    predictions: list[int] = []
    with torch.no_grad():
        for input_ids, attention_mask, _labels in batches(examples, tokenizer, batch_size):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            predictions.extend(logits.argmax(dim=-1).tolist())
    truth = [example.label for example in examples]
    return {**classification_scores(truth, predictions, num_labels), "examples": len(examples)}


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
    run = FineTuning(model, tokenizer, train, options, validation, num_labels, checkpoint)
    return run.run()


class FineTuning:
    """One fine-tuning run: the model, its optimizer and schedule, and where the loop is."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        train: Sequence[Example],
        options: TrainOptions,
        validation: Sequence[Example],
        num_labels: int,
        checkpoint: Checkpoint | None,
    ) -> None:
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.train, self.validation, self.num_labels = train, validation, num_labels
        self.checkpoint = checkpoint
        steps_per_epoch = math.ceil(len(train) / options.batch_size)
        self.total_steps = options.max_steps or options.epochs * steps_per_epoch
        self.eval_every = options.eval_every or min(steps_per_epoch, self.total_steps)
        self.optimizer, self.scheduler = make_optimizer(model, options, self.total_steps)
        self.rng = random.Random(options.seed)
        state = checkpoint.load(model, self.optimizer, self.scheduler) if checkpoint else None
        self.resumed_from = state.step if state else 0
        self.state = state or LoopState()
        self.best_weights = (
            checkpoint.best_state_dict() if checkpoint and self.resumed_from else None
        )
        self.stopped_early = self.stopped_by_budget = False
        self.deadline = time.monotonic() + 60 * options.max_minutes if options.max_minutes else None
        self.loss = float("nan")
        self.step_seconds: list[float] = []
        self.lengths = (
            token_lengths(tokenizer, [example.text for example in train])
            if options.group_by_length
            else None
        )
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=max(1, options.average_last))
        self.weight_average: dict[str, float] | None = None

    def run(self) -> TrainStats:
        """Epochs until the step count, patience or the time budget ends the run."""
        started = time.perf_counter()
        self.model.train()
        # Log lines go above the progress bar instead of through it.
        with logging_redirect_tqdm(), self._progress_bar() as bar:
            while self.state.step < self.total_steps and not self.stopped_early:
                self._epoch(bar)
        self._final_weights()
        self.model.eval()
        return self._stats(time.perf_counter() - started)

    def _progress_bar(self) -> tqdm:
        return tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            disable=not self.options.progress,
        )

    def _epoch(self, bar: tqdm) -> None:
        """One pass in a seeded order; a resumed run skips the batches it already took."""
        state = self.state
        if state.batch_in_epoch == 0:
            state.epoch += 1
            state.epoch_rng_state = self.rng.getstate()
        else:
            self.rng.setstate(state.epoch_rng_state)
        epoch = batches(self.train, self.tokenizer, self.options.batch_size, self.rng, self.lengths)
        for index, batch in enumerate(epoch):
            if index < state.batch_in_epoch:
                continue
            self._step(batch)
            state.batch_in_epoch = index + 1
            self._show(bar)
            if self._stop_after_step():
                return
        state.batch_in_epoch = 0

    def _step(self, batch: Batch) -> None:
        """One optimizer step with clipped gradients."""
        input_ids, attention_mask, labels = batch
        tick = time.perf_counter()
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = training_loss(logits, labels, self.options.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_seconds.append(time.perf_counter() - tick)
        self.loss = float(loss.detach())
        self.state.step += 1

    def _show(self, bar: tqdm) -> None:
        """Advance the bar; once the first steps are timed, fit the schedule to the budget."""
        if self.deadline is not None and len(self.step_seconds) == FIT_AFTER_STEPS:
            self.total_steps = self._fit_schedule()
            bar.total = self.total_steps
        bar.update(1)
        bar.set_postfix(loss=f"{self.loss:.4f}", epoch=self.state.epoch)

    def _stop_after_step(self) -> bool:
        """Validate when due; True when patience, the time budget or the step count ends it."""
        state = self.state
        out_of_time = self.deadline is not None and time.monotonic() > self.deadline
        due = state.step % self.eval_every == 0 or state.step == self.total_steps or out_of_time
        if self.validation and due and self._validate_and_checkpoint():
            self.stopped_early = True
            return True
        if out_of_time:
            self.stopped_by_budget = self.stopped_early = True
            log.warning(
                "train.time_budget_spent", step=state.step, minutes=self.options.max_minutes
            )
            return True
        return state.step >= self.total_steps

    def _validate_and_checkpoint(self) -> bool:
        """Score the validation set, keep the best weights, checkpoint; True when patience
        has run out."""
        gained = _validate(
            self.model, self.tokenizer, self.validation, self.num_labels, self.options, self.state
        )
        if gained:
            self.best_weights = copy.deepcopy(self.model.state_dict())
        if self.options.average_last > 1:
            self.snapshots.append(copy.deepcopy(self.model.state_dict()))
        if self.checkpoint:
            self.checkpoint.save(
                self.model, self.optimizer, self.scheduler, self.state, best=gained
            )
        patience = self.options.patience
        return bool(patience) and self.state.evals_without_gain >= patience

    def _final_weights(self) -> None:
        """Leave the model with the best validated weights: the average of the last
        `average_last` validations' weights when it scores at least the best single one's
        macro-F1, else the best single one's."""
        if len(self.snapshots) > 1 and self.validation:
            self.model.load_state_dict(average_state_dicts(self.snapshots))
            scores = evaluate(
                self.model,
                self.tokenizer,
                self.validation,
                self.num_labels,
                self.options.eval_batch_size,
            )
            used = scores["macro_f1"] >= self.state.best_macro_f1
            self.weight_average = {
                "checkpoints": len(self.snapshots),
                "accuracy": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
                "used": used,
            }
            log.info("train.weight_average", **self.weight_average)
            if used:
                return
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)

    def _fit_schedule(self) -> int:
        """Fit the LR schedule to the time budget, so a slow machine still ends its decay."""
        assert self.deadline is not None
        # Length-grouped batches differ in cost, so their mean (not the median) sets the pace.
        pace = statistics.fmean if self.lengths is not None else statistics.median
        per_step = pace(self.step_seconds)
        seconds_left = self.deadline - time.monotonic()
        fitted = fit_to_budget(self.state.step, self.total_steps, seconds_left, per_step)
        if fitted < self.total_steps:
            for schedule in self.scheduler.lr_lambdas:
                schedule.total = fitted
            log.warning(
                "train.schedule_fitted_to_budget",
                planned_steps=self.total_steps,
                steps=fitted,
                seconds_per_step=round(per_step, 3),
            )
        return fitted

    def _stats(self, seconds: float) -> TrainStats:
        state = self.state
        return TrainStats(
            steps=state.step,
            epochs_run=state.epoch,
            seconds=seconds,
            seconds_per_step=statistics.median(self.step_seconds) if self.step_seconds else 0.0,
            final_loss=self.loss,
            best_step=state.best_step,
            best_macro_f1=state.best_macro_f1 if state.evaluations else None,
            stopped_early=self.stopped_early,
            stopped_by_budget=self.stopped_by_budget,
            resumed_from_step=self.resumed_from,
            evaluations=state.evaluations,
            weight_average=self.weight_average,
        )


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
