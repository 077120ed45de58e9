"""The review loop's two records, shared by the worker (which writes reviews and joins feedback),
`worker review` (which reads reviews and writes feedback) and `trainer retrain` (which reads
both).

- A **review** (topic `labelstream.review`, key = message id): a labelled record the model was
  unsure of, with the text a person needs to judge it, the scores and the model version.
- A **feedback** record (topic `labelstream.feedback`, key = message id): a person's label for
  that id. `text` is optional: `trainer retrain` takes it from the review when it is absent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson

REVIEW_TOPIC = "labelstream.review"
FEEDBACK_TOPIC = "labelstream.feedback"


@dataclass(frozen=True, slots=True)
class Review:
    id: str
    text: str
    label: str
    """What the model predicted."""
    confidence: float
    scores: dict[str, float]
    """Every label's probability, as the labelled record has them."""
    model: str
    version: str
    route: str
    """The source topic the message came from."""
    ts: str
    """When the worker labelled it (ISO 8601, UTC)."""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, value: bytes) -> Review:
        """Raises ValueError/KeyError/TypeError on a record that is not a review."""
        data = orjson.loads(value)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    label: str
    by: str
    """Who labelled it (a person's name, or a tool's)."""
    ts: str
    """When (ISO 8601)."""
    text: str | None = field(default=None)

    def to_json(self) -> bytes:
        data = asdict(self)
        if data["text"] is None:
            del data["text"]
        return orjson.dumps(data)
