"""A drift window: what one model's traffic looked like since the window opened (pure data).

Classify agents send one `Sample` per batch and served version to the drift agent; the drift
agent merges them into the model's `Window`, which lives in a Faust table (a plain dict per
model, so its changelog restores it after a restart or rebalance). Everything a report needs is
kept as mergeable sufficient statistics: label counts, histograms and a bounded reservoir sample
of projected embeddings, so a window's size in memory does not grow with its message count.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from contracts.reference import LENGTH_EDGES, bin_counts

CONFIDENCE_BINS = 100
"""The window keeps max-probabilities in 100 bins of 0.01: enough for quantiles and KS."""
CONFIDENCE_EDGES: tuple[float, ...] = tuple(i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1))


def encode_rows(rows: np.ndarray) -> str:
    """Float32 rows as base64, so a sample crosses Kafka and the table changelog compactly."""
    return base64.b64encode(np.ascontiguousarray(rows, dtype="<f4").tobytes()).decode("ascii")


def decode_rows(text: str, dims: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(-1, dims).astype(np.float64)


@dataclass
class Sample:
    """One batch's contribution to its model's window (or a tick that only checks the clock).

    `embedding` is the batch's embeddings projected with the version's reference matrix, as
    base64 float32 rows of `dims` columns; absent when the version has no reference.
    """

    kind: str
    model: str
    sent_at: float
    version: str | None = None
    labels: list[str] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    embedding: str | None = None
    dims: int = 0
    dead_letters: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    role: str = "active"
    """`active`, or `canary` for messages the registry routed to the candidate version."""
    candidate_failures: int = 0
    """Canary requests that failed; those messages were labelled by the active version."""
    shadow_version: str | None = None
    shadow_agree: list[int] = field(default_factory=list)
    """Per labelled message: 1 the shadow version gave the same label, 0 not, -1 it failed."""
    shadow_delta: list[float] = field(default_factory=list)
    """Per labelled message: shadow confidence minus active confidence (0 when it failed)."""
    feedback: list[list[int]] = field(default_factory=list)
    """kind `feedback`: [predicted, corrected] label indices of corrections joined to the
    predictions of `version` (`worker/feedback_join.py`); they count no message."""
    feedback_at: list[int] = field(default_factory=list)
    """kind `feedback`: [partition, offset] of the feedback record on the feedback topic: the
    join runs at least once, so a correction joined again after a crash is recognised."""

    @property
    def messages(self) -> int:
        return len(self.predicted) + self.dead_letters + self.candidate_failures

    def to_dict(self) -> dict[str, Any]:
        """The fields, sharing their lists (a sample is serialised at once, never mutated
        after): `asdict` copied every list element by element, per batch."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return cls(**data)

    @classmethod
    def tick(cls, model: str, now: float) -> Sample:
        return cls(kind="tick", model=model, sent_at=now)

    def split(self, room: int) -> tuple[Sample, Sample | None]:
        """(the first `room` messages, the rest or None): windows close at an exact count.

        Dead letters count first, then labelled messages in their order in the batch.
        """
        if self.messages <= room:
            return self, None
        failed = min(self.candidate_failures, room)
        dead = min(self.dead_letters, room - failed)
        cut = room - dead - failed
        head = replace(self, dead_letters=dead, candidate_failures=failed)
        tail = replace(
            self,
            dead_letters=self.dead_letters - dead,
            candidate_failures=self.candidate_failures - failed,
        )
        for name in ("predicted", "confidence", "length", "shadow_agree", "shadow_delta"):
            values = getattr(self, name)
            setattr(head, name, values[:cut])
            setattr(tail, name, values[cut:])
        if self.embedding:
            rows = decode_rows(self.embedding, self.dims)
            head.embedding = encode_rows(rows[:cut]) if cut else None
            tail.embedding = encode_rows(rows[cut:])
        return head, tail


@dataclass
class Window:
    """Sufficient statistics of one model's traffic over one window, for one served version."""

    model: str
    window_id: str
    opened_at: float
    role: str = "active"
    version: str | None = None
    previous_version: str | None = None
    labels: list[str] = field(default_factory=list)
    label_counts: list[int] = field(default_factory=list)
    labelled: int = 0
    dead_letters: int = 0
    confidence_counts: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    confidence_sum: float = 0.0
    length_edges: list[float] = field(default_factory=lambda: list(LENGTH_EDGES))
    length_counts: list[int] = field(default_factory=lambda: [0] * (len(LENGTH_EDGES) - 1))
    length_sum: float = 0.0
    embedding_dims: int = 0
    embedding_sample: str = ""
    embedding_seen: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    candidate_failures: int = 0
    shadow_version: str | None = None
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_failed: int = 0
    shadow_class_compared: list[int] = field(default_factory=list)
    shadow_class_agreed: list[int] = field(default_factory=list)
    shadow_delta_sum: float = 0.0

    @classmethod
    def open(
        cls,
        model: str,
        opened_at: float,
        sequence: int = 0,
        previous_version: str | None = None,
        role: str = "active",
    ) -> Window:
        """A new window, numbered per model: a replay after a crash rebuilds the same id."""
        return cls(
            model=model,
            window_id=f"{model}:{sequence}",
            opened_at=opened_at,
            role=role,
            previous_version=previous_version,
        )

    @property
    def messages(self) -> int:
        return self.labelled + self.dead_letters + self.candidate_failures

    def is_due(self, now: float, max_seconds: float, max_messages: int) -> str | None:
        """Why the window should close now (`messages` or `time`), or None."""
        if self.messages >= max_messages:
            return "messages"
        if self.messages and now - self.opened_at >= max_seconds:
            return "time"
        return None

    def add(self, sample: Sample, sample_size: int, seed: int = 0) -> None:
        """Merge one batch sample; its version must be this window's (or the window's first)."""
        if sample.kind != "batch":
            raise ValueError(f"only batch samples are merged, not {sample.kind!r}")
        self.dead_letters += sample.dead_letters
        self.candidate_failures += sample.candidate_failures
        for ts in (sample.first_ts, sample.last_ts):
            if ts is not None:
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if self.version is None:
            self.version = sample.version
        if not sample.predicted:
            return
        if not self.labels and sample.version == self.version:
            self.labels = list(sample.labels)
            self.label_counts = [0] * len(self.labels)
        elif sample.version != self.version or sample.labels != self.labels:
            raise ValueError(
                f"sample of version {sample.version} merged into a window of {self.version}"
            )
        counts = np.bincount(np.asarray(sample.predicted), minlength=len(self.labels))
        self.label_counts = (np.asarray(self.label_counts) + counts).tolist()
        self.labelled += len(sample.predicted)
        self.confidence_counts = (
            np.asarray(self.confidence_counts) + bin_counts(sample.confidence, CONFIDENCE_EDGES)
        ).tolist()
        self.confidence_sum += float(np.sum(sample.confidence))
        self.length_counts = (
            np.asarray(self.length_counts) + bin_counts(sample.length, self.length_edges)
        ).tolist()
        self.length_sum += float(np.sum(sample.length))
        if sample.embedding:
            self._reservoir(decode_rows(sample.embedding, sample.dims), sample_size, seed)
        if sample.shadow_version is not None:
            self._shadow(sample)

    def _shadow(self, sample: Sample) -> None:
        """Agreement of the shadow version with the labels that were published."""
        if self.shadow_version not in (None, sample.shadow_version):
            self.shadow_compared = self.shadow_agreed = self.shadow_failed = 0
            self.shadow_delta_sum = 0.0
            self.shadow_class_compared = []
        self.shadow_version = sample.shadow_version
        if not self.shadow_class_compared:
            self.shadow_class_compared = [0] * len(self.labels)
            self.shadow_class_agreed = [0] * len(self.labels)
        for label, agree, delta in zip(
            sample.predicted, sample.shadow_agree, sample.shadow_delta, strict=True
        ):
            if agree < 0:
                self.shadow_failed += 1
                continue
            self.shadow_compared += 1
            self.shadow_agreed += agree
            self.shadow_class_compared[label] += 1
            self.shadow_class_agreed[label] += agree
            self.shadow_delta_sum += delta

    def _reservoir(self, rows: np.ndarray, size: int, seed: int) -> None:
        """Reservoir sampling (algorithm R): every row seen so far is kept with equal chance."""
        if self.embedding_dims and rows.shape[1] != self.embedding_dims:
            raise ValueError("projected embedding width changed inside a window")
        self.embedding_dims = rows.shape[1]
        kept = self.embedding_rows()
        rng = np.random.default_rng([seed, self.embedding_seen])
        out = list(kept[:size])
        fill = min(len(rows), size - len(out))
        out.extend(rows[:fill])
        seen = self.embedding_seen + fill
        # Row i (0-based, after the fill) is the (seen + i + 1)-th seen: it takes a slot drawn
        # from [0, seen + i + 1) and is kept when that slot is one of the reservoir's.
        slots = rng.integers(np.arange(seen + 1, seen + len(rows) - fill + 1))
        for row, slot in zip(rows[fill:], slots.tolist(), strict=True):
            if slot < size:
                out[slot] = row
        self.embedding_seen += len(rows)
        self.embedding_sample = encode_rows(np.asarray(out)) if out else ""

    def embedding_rows(self) -> np.ndarray:
        if not self.embedding_sample:
            return np.empty((0, self.embedding_dims))
        return decode_rows(self.embedding_sample, self.embedding_dims)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls(**data)


@dataclass(frozen=True)
class WindowPolicy:
    """When a window closes (whichever comes first) and how many embeddings it samples."""

    max_seconds: float = 60.0
    max_messages: int = 1000
    sample_size: int = 256


@dataclass
class RoleWindow:
    """The open window of one traffic role and the version that role served last."""

    window: Window | None = None
    last_version: str | None = None


@dataclass
class DriftState:
    """The table value for one model: its open windows (one per role: the active version's
    traffic and a canary's share) and what must survive between windows."""

    model: str
    roles: dict[str, RoleWindow] = field(default_factory=dict)
    opened: int = 0
    """Windows opened so far for this model: the sequence number in window ids."""
    applied: dict[str, int] = field(default_factory=dict)
    """Highest sample offset merged per partition: a sample replayed after a crash is skipped."""
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per version, corrections joined since the last report: {"labels", "confusion"} with
    confusion[predicted][corrected] counts; reported with the next window that closes."""
    feedback_applied: dict[str, int] = field(default_factory=dict)
    """Highest feedback-topic offset counted per partition: a re-joined correction is skipped."""

    @property
    def window(self) -> Window | None:
        """The active role's open window."""
        return self.roles.get("active", RoleWindow()).window

    def advance(
        self, sample: Sample, *, partition: int, offset: int, now: float, policy: WindowPolicy
    ) -> list[tuple[Window, str]]:
        """Merge `sample` (or just check the clock on a tick); return the windows it closed.

        A sample of another version than its role's window closes that window first
        (`version_change`), so every window compares one version with that version's reference.
        """
        if self.applied.get(str(partition), -1) >= offset:
            return []
        self.applied[str(partition)] = offset
        if sample.kind == "feedback":
            self._add_feedback(sample)
            return []
        closed: list[tuple[Window, str]] = []
        rest: Sample | None = sample if sample.kind == "batch" and sample.messages else None
        role = self.roles.setdefault(sample.role, RoleWindow()) if rest else None
        while rest is not None and role is not None:
            changed = bool(rest.predicted) and rest.version != role.last_version
            if changed and role.window is not None and role.window.labelled:
                closed.append((role.window, "version_change"))
                role.window = None
            if role.window is None:
                self.opened += 1
                role.window = Window.open(
                    self.model,
                    rest.sent_at,
                    sequence=self.opened,
                    previous_version=role.last_version if changed else None,
                    role=sample.role,
                )
            elif changed:
                role.window.previous_version = role.last_version
            head, rest = rest.split(policy.max_messages - role.window.messages)
            role.window.add(head, policy.sample_size)
            if head.predicted:
                role.last_version = head.version
            if role.window.messages >= policy.max_messages:
                closed.append((role.window, "messages"))
                role.window = None
        for each in self.roles.values():
            if each.window is not None:
                reason = each.window.is_due(now, policy.max_seconds, policy.max_messages)
                if reason:
                    closed.append((each.window, reason))
                    each.window = None
        return closed

    def _add_feedback(self, sample: Sample) -> None:
        if sample.feedback_at:
            partition, offset = str(sample.feedback_at[0]), sample.feedback_at[1]
            if self.feedback_applied.get(partition, -1) >= offset:
                return
            self.feedback_applied[partition] = offset
        version = str(sample.version)
        size = len(sample.labels)
        entry = self.feedback.setdefault(
            version, {"labels": list(sample.labels), "confusion": [[0] * size for _ in range(size)]}
        )
        if entry["labels"] != sample.labels:
            raise ValueError(f"feedback for version {version} with other labels")
        for predicted, corrected in sample.feedback:
            entry["confusion"][predicted][corrected] += 1

    def take_feedback(self) -> dict[str, dict[str, Any]]:
        """The corrections joined since the last report, per version; reset."""
        taken, self.feedback = self.feedback, {}
        return taken

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftState:
        roles = {
            name: RoleWindow(
                window=None if value.get("window") is None else Window.from_dict(value["window"]),
                last_version=value.get("last_version"),
            )
            for name, value in data.get("roles", {}).items()
        }
        return cls(
            model=data["model"],
            roles=roles,
            opened=int(data.get("opened", 0)),
            applied=dict(data.get("applied", {})),
            feedback=dict(data.get("feedback", {})),
            feedback_applied=dict(data.get("feedback_applied", {})),
        )
