"""Task presets: which labels a task predicts and under which Triton model name it is served.

The label order here is the column order of `PROBS` and `LABELS` in every exported version,
so it must never be reordered for an existing task (add a new task instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """A classification task: its name, its label set (in output order) and its model name."""

    name: str
    labels: tuple[str, ...]
    default_model_name: str
    training: dict[str, Any] = field(default_factory=dict)
    """Recipe defaults for `TrainOptions`; options given explicitly win."""


TASKS: dict[str, Task] = {
    "news": Task(
        name="news",
        labels=("World", "Sports", "Business", "Sci/Tech"),
        default_model_name="news_topic",
        # News bodies run to ~90 tokens; 4 epochs of the 10k AG News rows fit the 45-minute
        # budget on 2 CPU cores. Pilots (250 steps, 64 tokens): lr 1e-4 0.896, 5e-5 0.892.
        training={
            "epochs": 4,
            "max_length": 128,
            "learning_rate": 1e-4,
            "patience": 2,
            "max_minutes": 40,
        },
    ),
    "reviews": Task(
        name="reviews",
        labels=("negative", "positive"),
        default_model_name="review_sentiment",
        # SST-2 rows are short phrases; one pass over the 67k rows, validated every 500 steps.
        training={
            "epochs": 1,
            "max_length": 64,
            "learning_rate": 5e-5,
            "eval_every": 500,
            "patience": 3,
            "max_minutes": 40,
        },
    ),
}


def get_task(name: str) -> Task:
    """Look a preset up by name, naming the valid choices when it does not exist."""
    try:
        return TASKS[name]
    except KeyError:
        choices = ", ".join(sorted(TASKS))
        raise ValueError(f"unknown task {name!r}; choose one of: {choices}") from None
