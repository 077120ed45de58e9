"""The knobs of one training run, declared once.

Each `TrainOptions` field carries its default and its help; `train_option_flags` turns the fields
into `trainer train`'s flags, so a new option is one field here and nothing else. A flag left
out stays `None`: the task's preset (`Task.training`) decides, else the field's default.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from trainer.tasks import get_task


def option(default: Any, help: str, *, flag: bool = True, fallback: str = "") -> Any:
    """A field with its help; `fallback` names where a `None` default is filled from."""
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "fallback": fallback}
    )


@dataclass
class TrainOptions:
    """Knobs of one training run; `seed`/`torch_threads` left `None` come from TrainerSettings."""

    max_steps: int | None = option(None, "Stop after this many steps.", fallback="none")
    epochs: int = option(1, "Epochs when --max-steps is unset.")
    batch_size: int = option(32, "Training batch size.")
    eval_batch_size: int = option(64, "Validation batch size.")
    max_length: int = option(64, "Tokens per text.")
    learning_rate: float = option(5e-5, "Peak AdamW learning rate.")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = option(0.1, "Share of the steps spent warming the LR up.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.")
    max_train_samples: int | None = option(None, "Cap the training set.", fallback="all")
    max_eval_samples: int | None = option(None, "Cap the validation set.", fallback="all")
    validation_fraction: float = option(0.1, "Share of DATA held out for validation.")
    seed: int | None = option(
        None, "Seed of the split, initialisation and shuffling.", fallback="env TRAINER_SEED"
    )
    torch_threads: int | None = option(
        None, "torch intra-op threads.", fallback="env TRAINER_TORCH_THREADS"
    )
    parity_texts: int = option(6, "Validation texts the ONNX parity check runs.")
    progress: bool = option(True, "Show a progress bar.", flag=False)
    eval_every: int | None = option(
        None, "Validate every N steps (and always at the end).", fallback="once per epoch"
    )
    patience: int | None = option(3, "Stop after N validations without macro-F1 gain; 0 never.")
    head: str = option(
        "mean", 'Classifier head: "mean" (linear on mean-pooled tokens) or "cls" (BERT pooler).'
    )
    max_minutes: float | None = option(
        None, "Time budget of the training loop: validate once more and stop.", fallback="none"
    )
    hybrid: bool = option(
        False,
        "Serve a blend with a word+char TF-IDF logistic regression (tfidf.onnx); its weight is "
        "chosen by K-fold on the training rows.",
    )
    blend_fraction: float = option(
        0.1,
        "With --hybrid: share of the training rows the transformer does not train on; the blend "
        "weight is chosen on them, where both models are out-of-sample. 0: on all training rows, "
        "with the transformer in-sample (leans toward the transformer).",
    )
    group_by_length: bool = option(
        True,
        "Batch texts of similar token length (sorted within shuffled chunks, batches shuffled), "
        "so a batch pads to less.",
    )
    layer_lr_decay: float = option(
        1.0, "Each encoder layer's LR is this times the next one up's (embeddings lowest); 1 off."
    )
    head_lr_multiplier: float = option(1.0, "The classifier head's LR, as a multiple of the LR.")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss.")
    average_last: int = option(
        0,
        "Average the weights of the last N validations; kept when it validates at least as well "
        "as the best single one. 0 or 1: off.",
    )

    @classmethod
    def for_task(cls, task: str, **given: Any) -> TrainOptions:
        """Field defaults, replaced by the task's preset, replaced by what was given.

        `None` means "not given"; an unknown name is refused with the known ones listed.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        chosen = {key: value for key, value in given.items() if value is not None}
        return cls(**{**get_task(task).training, **chosen})

    def with_fallbacks(self, seed: int, torch_threads: int) -> TrainOptions:
        """These options with `seed` and `torch_threads` filled in where they are `None`."""
        return dataclasses.replace(
            self,
            seed=seed if self.seed is None else self.seed,
            torch_threads=self.torch_threads or torch_threads,
        )


def _flag(field: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    """A keyword parameter typer reads as `--field-name`, defaulting to `None` (not given)."""
    import typer

    shown = field.metadata["fallback"] or repr(field.default)
    # Parentheses, not brackets: typer's rich help would read brackets as markup.
    help_text = f"{field.metadata['help']} (default: {shown}, or the task's preset)"
    optional = annotation if type(None) in typing.get_args(annotation) else annotation | None
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[optional, typer.Option(help=help_text, show_default=False)],
    )


def train_option_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give a typer command one flag per `TrainOptions` field; the command receives the given
    ones (without `None`s) as its `options` keyword, a dict for `TrainOptions.for_task`."""
    hints = typing.get_type_hints(TrainOptions)
    flags = [
        _flag(field, hints[field.name])
        for field in dataclasses.fields(TrainOptions)
        if field.metadata["flag"]
    ]
    names = {flag.name for flag in flags}
    own = inspect.signature(command, eval_str=True)
    kept = [param for name, param in own.parameters.items() if name != "options"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in names if kwargs.get(name) is not None}
        for name in names:
            kwargs.pop(name, None)
        return command(*args, **kwargs, options=given)

    wrapper.__signature__ = own.replace(parameters=[*kept, *flags])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {param.name: param.annotation for param in [*kept, *flags]}
    return wrapper
