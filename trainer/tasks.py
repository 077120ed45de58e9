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
    ),
    "reviews": Task(
        name="reviews",
        labels=("negative", "positive"),
        default_model_name="review_sentiment",
    ),
}


def get_task(name: str) -> Task:
    """Look a preset up by name, naming the valid choices when it does not exist."""
    try:
        return TASKS[name]
    except KeyError:
        choices = ", ".join(sorted(TASKS))
        raise ValueError(f"unknown task {name!r}; choose one of: {choices}") from None
