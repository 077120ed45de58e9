"""The fine-tuning loop: AdamW with a linear schedule, periodic validation, early stopping on
macro-F1 with the best weights restored, a time budget, and resumable checkpoints.

`FineTuning` holds one run's mutable state so that each concern (a step, an epoch, what to do
after a step) is a short method; `fine_tune` is the one call the training recipe makes.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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


def batches(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int,
    rng: random.Random | None = None,
) -> Iterator[Batch]:
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

    def run(self) -> TrainStats:
        """Epochs until the step count, patience or the time budget ends the run."""
        started = time.perf_counter()
        self.model.train()
        # Log lines go above the progress bar instead of through it.
        with logging_redirect_tqdm(), self._progress_bar() as bar:
            while self.state.step < self.total_steps and not self.stopped_early:
                self._epoch(bar)
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
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
        epoch = batches(self.train, self.tokenizer, self.options.batch_size, self.rng)
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
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_seconds.append(time.perf_counter() - tick)
        self.loss = float(out.loss.detach())
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
        if self.checkpoint:
            self.checkpoint.save(
                self.model, self.optimizer, self.scheduler, self.state, best=gained
            )
        patience = self.options.patience
        return bool(patience) and self.state.evals_without_gain >= patience

    def _fit_schedule(self) -> int:
        """Fit the LR schedule to the time budget, so a slow machine still ends its decay."""
        assert self.deadline is not None
        per_step = statistics.median(self.step_seconds)
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
