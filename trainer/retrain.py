"""`trainer retrain`: a new version from the base data plus people's corrections, published as a
canary only when it is not worse than the active version on the same held-out rows.

The recipe (`retrain`): the active version (registry) and its task, labels and split options ->
the model's corrections (`trainer.corrections`) -> the base rows split as the active version's
were, corrections merged into the training side -> train (`trainer.train.train_and_export`) ->
both versions scored as served (`contracts/serving.py`) on the same held-out rows and on the
corrections -> refuse, or publish as a canary (`trainer.rollout`) -> report.

A corrected text is a training row, never a held-out one: a held-out row whose text a person
corrected moves to training, and both versions are scored on the held-out rows that remain.

A refused version is moved out of Triton's view to `<model>/.refused/<version>-<time>/` (its
report inside), so neither `trainer publish` (newest on disk) nor a Triton restart serves it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from contracts.review import FEEDBACK_TOPIC, REVIEW_TOPIC
from trainer.corrections import (
    Changes,
    Correction,
    Corrections,
    kafka_reader,
    merge,
    read_corrections,
)
from trainer.data import Columns, Example, training_split
from trainer.metrics import classification_scores
from trainer.options import TrainOptions
from trainer.publish import PublishError
from trainer.repository import data_fingerprint, model_path
from trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from trainer.rollout import Rollout
    from worker.client import Record

log = structlog.get_logger(__name__)

REPORT_FILE = "retrain.json"
REFUSED_DIR = ".refused"
SPLIT_OPTIONS = ("seed", "validation_fraction")
"""Recorded by the active version and reused, so its held-out rows are the held-out rows here."""


class RetrainError(RuntimeError):
    """Retraining cannot start or finish; the message says why."""


class RetrainIO(Protocol):
    """The boundaries of the recipe: the registry, Kafka, training, serving, publishing."""

    def active_version(self) -> int | None: ...

    def read_records(self, topics: list[str]) -> list[Record]: ...

    def train(
        self, task: str, data: Path, validation: Path, options: TrainOptions, precision: str
    ) -> Path: ...

    def score(self, version_dir: Path, texts: Sequence[str]) -> np.ndarray: ...

    def publish(self, version: int, share: float) -> Any: ...


@dataclass(frozen=True)
class RetrainRequest:
    """What `trainer retrain` was asked."""

    model: str
    data: Path
    canary: float = 0.1
    max_drop: float = 0.01
    """Refuse when the new held-out accuracy is below the active one's by more than this."""
    feedback_topic: str = FEEDBACK_TOPIC
    review_topic: str = REVIEW_TOPIC
    options: Mapping[str, Any] = field(default_factory=dict)
    """Given `TrainOptions` flags; the task's preset fills the rest."""
    columns: Columns | None = None
    validation_data: Path | None = None


@dataclass(frozen=True)
class Active:
    """The version that serves now: what the new one is compared with."""

    version: int
    path: Path
    task: str
    labels: tuple[str, ...]
    precision: str
    recorded_options: dict[str, Any]
    trained_on: set[str]
    """Fingerprints of the base data it was trained from (its own data, or its retrain base)."""


@dataclass
class Rows:
    """The training and held-out rows of the new version, and what the corrections changed."""

    train: list[Example]
    held_out: list[Example]
    changes: Changes
    moved_to_training: int
    """Held-out rows whose text was corrected: training rows now."""


@dataclass
class RetrainReport:
    """Everything `trainer retrain` decided and why; written as retrain.json."""

    model: str
    task: str
    active_version: int
    new_version: int
    corrections: dict[str, Any]
    changes: dict[str, Any]
    held_out: dict[str, Any]
    train_rows: int
    scores: dict[str, dict[str, dict[str, float]]]
    """Row set ("held_out", "corrections") -> "active"/"new" -> accuracy, macro_f1, rows."""
    max_drop: float
    published: bool = False
    canary: float | None = None
    reason: str = ""
    base_data: str = ""
    base_fingerprint: str = ""
    run_dir: str = ""
    version_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def retrain(request: RetrainRequest, settings: TrainerSettings, io: RetrainIO) -> RetrainReport:
    """Read, merge, train, compare, then publish as a canary or refuse; returns the report.

    Raises RetrainError before training when there is nothing to compare with or to learn from.
    """
    active = active_version(io, model_path(Path(settings.repository), request.model))
    corrections = read_corrections(
        io.read_records, request.model, active.labels, request.feedback_topic, request.review_topic
    )
    if not corrections.items:
        raise RetrainError(
            f"no usable corrections of {request.model!r} on {request.feedback_topic} "
            f"({corrections.summary()}); nothing to retrain on"
        )
    options = retrain_options(active, request.options, settings)
    rows = split_and_merge(request, active.labels, options, corrections.items)
    run_dir = write_rows(settings.retrain_dir / request.model, rows, corrections, active.labels)
    # The caps were applied to the base rows: capping again would cut appended corrections.
    uncapped = dataclasses.replace(options, max_train_samples=None, max_eval_samples=None)
    new_dir = io.train(
        active.task, run_dir / "train.jsonl", run_dir / "held_out.jsonl", uncapped, active.precision
    )
    scores = score_both(io, active, new_dir, rows.held_out, corrections.items)
    report = new_report(request, active, new_dir, rows, corrections, scores, options)
    report.run_dir = str(run_dir)
    return publish_or_refuse(report, new_dir, io)


def active_version(io: RetrainIO, model_dir: Path) -> Active:
    """The registry's active version of the model, with what its files record."""
    version = io.active_version()
    if version is None:
        raise RetrainError(
            f"{model_dir.name!r} has no active version in the registry: publish one first"
        )
    path = model_dir / str(version)
    if not path.is_dir():
        raise RetrainError(f"the active version {version} is not in {model_dir}")
    classifier = _read_json(path / "classifier.json")
    if "task" not in classifier:
        raise RetrainError(f"{path / 'classifier.json'} does not name the version's task")
    metrics = _read_json(path / "metrics.json")
    earlier = _read_json(path / REPORT_FILE)
    return Active(
        version=version,
        path=path,
        task=classifier["task"],
        labels=tuple(_read_json(path / "labels.json") or classifier["labels"]),
        precision=classifier.get("precision", "fp32"),
        recorded_options=metrics.get("options", {}),
        trained_on={metrics.get("data_fingerprint"), earlier.get("base_fingerprint")} - {None},
    )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def retrain_options(
    active: Active, given: Mapping[str, Any], settings: TrainerSettings
) -> TrainOptions:
    """The task's preset and the given flags, with the active version's split options where
    none were given, so the held-out rows are the rows the active version held out."""
    inherited = {
        key: active.recorded_options[key]
        for key in SPLIT_OPTIONS
        if active.recorded_options.get(key) is not None
    }
    options = TrainOptions.for_task(active.task, **{**inherited, **given})
    return options.with_fallbacks(settings.seed, settings.torch_threads)


def split_and_merge(
    request: RetrainRequest,
    labels: Sequence[str],
    options: TrainOptions,
    corrections: Sequence[Correction],
) -> Rows:
    """The base file split as a training run splits it, each side capped as the options say;
    the corrections merged into the training side, and never held out."""
    split = training_split(
        request.data,
        labels,
        options.validation_fraction,
        options.seed,
        request.validation_data,
        request.columns,
    )
    train = split.train[: options.max_train_samples or None]
    held_out = split.validation[: options.max_eval_samples or None]
    corrected = {correction.text for correction in corrections}
    kept = [row for row in held_out if row.text not in corrected]
    moved = [row for row in held_out if row.text in corrected]
    merged, changes = merge([*train, *moved], corrections, labels)
    if not kept:
        raise RetrainError("no held-out rows left to compare the versions on")
    return Rows(train=merged, held_out=kept, changes=changes, moved_to_training=len(moved))


def write_rows(
    model_dir: Path, rows: Rows, corrections: Corrections, labels: Sequence[str]
) -> Path:
    """train.jsonl, held_out.jsonl and corrections.jsonl in a new run dir: the files the new
    version is trained and validated on, kept so its metrics.json `data` can be read back."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = model_dir / f"{stamp}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    for name, examples in (("train", rows.train), ("held_out", rows.held_out)):
        lines = (
            json.dumps({"text": row.text, "label": labels[row.label]}, ensure_ascii=False)
            for row in examples
        )
        (run_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = (json.dumps(dataclasses.asdict(c), ensure_ascii=False) for c in corrections.items)
    (run_dir / "corrections.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("retrain.rows_written", run_dir=str(run_dir), train=len(rows.train))
    return run_dir


def scores_of(probs: np.ndarray, truth: Sequence[int], labels: Sequence[str]) -> dict[str, float]:
    scores = classification_scores(truth, np.asarray(probs).argmax(axis=1), len(labels))
    return {
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "rows": len(truth),
    }


def score_both(
    io: RetrainIO,
    active: Active,
    new_dir: Path,
    held_out: Sequence[Example],
    corrections: Sequence[Correction],
) -> dict[str, dict[str, dict[str, float]]]:
    """Both versions scored as served on the same held-out rows, and on the corrections."""
    index = {name: position for position, name in enumerate(active.labels)}
    row_sets = {
        "held_out": list(held_out),
        "corrections": [Example(c.text, index[c.label]) for c in corrections],
    }
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for name, examples in row_sets.items():
        texts = [example.text for example in examples]
        truth = [example.label for example in examples]
        scores[name] = {
            role: scores_of(io.score(path, texts), truth, active.labels)
            for role, path in (("active", active.path), ("new", new_dir))
        }
    log.info("retrain.compared", model=new_dir.parent.name, scores=scores)
    return scores


def new_report(
    request: RetrainRequest,
    active: Active,
    new_dir: Path,
    rows: Rows,
    corrections: Corrections,
    scores: dict[str, dict[str, dict[str, float]]],
    options: TrainOptions,
) -> RetrainReport:
    """The report before the decision: what was read, merged and measured."""
    fingerprint = data_fingerprint(request.data)
    if fingerprint not in active.trained_on:
        log.warning(
            "retrain.active_trained_on_other_data",
            hint="the active version may have trained on some of these held-out rows",
        )
    return RetrainReport(
        model=request.model,
        task=active.task,
        active_version=active.version,
        new_version=int(new_dir.name),
        corrections=corrections.summary(),
        changes=rows.changes.summary(),
        held_out={
            "rows": len(rows.held_out),
            "moved_to_training": rows.moved_to_training,
            "seed": options.seed,
            "validation_fraction": options.validation_fraction,
            "active_trained_on_this_base": fingerprint in active.trained_on,
        },
        train_rows=len(rows.train),
        scores=scores,
        max_drop=request.max_drop,
        canary=request.canary,
        base_data=str(request.data),
        base_fingerprint=fingerprint,
    )


def refusal(report: RetrainReport) -> str | None:
    """Why the new version must not be published, or None: held-out accuracy worse than the
    active version's by more than `max_drop` (a drop of exactly the margin is allowed)."""
    held_out = report.scores["held_out"]
    drop = held_out["active"]["accuracy"] - held_out["new"]["accuracy"]
    if drop > report.max_drop + 1e-9:
        return (
            f"held-out accuracy {held_out['new']['accuracy']:.4f} is {100 * drop:.2f} points "
            f"below the active version's {held_out['active']['accuracy']:.4f} "
            f"(allowed: {100 * report.max_drop:.2f})"
        )
    return None


def publish_or_refuse(report: RetrainReport, new_dir: Path, io: RetrainIO) -> RetrainReport:
    """Publish the new version as a canary, or set it aside; the report is written either way
    (a failed publish too, before its error goes up)."""
    reason = refusal(report)
    if reason is not None:
        report.reason = f"refused: {reason}"
        new_dir = set_aside(new_dir)
    else:
        try:
            io.publish(report.new_version, report.canary)
        except PublishError as exc:
            report.reason = f"publish failed: {exc}"
            write_report(report, new_dir)
            raise
        report.published = True
        report.reason = f"published as a canary taking {report.canary:.0%} of traffic"
    write_report(report, new_dir)
    log.info(
        "retrain.decided", model=report.model, published=report.published, reason=report.reason
    )
    return report


def set_aside(version_dir: Path) -> Path:
    """Move a refused version where Triton and `trainer publish` do not look (not a number)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = version_dir.parent / REFUSED_DIR / f"{version_dir.name}-{stamp}"
    target.parent.mkdir(exist_ok=True)
    os.rename(version_dir, target)
    log.warning("retrain.version_set_aside", path=str(target))
    return target


def write_report(report: RetrainReport, version_dir: Path) -> None:
    report.version_dir = str(version_dir)
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    (version_dir / REPORT_FILE).write_text(text, encoding="utf-8")


@dataclass
class LiveIO:
    """The real boundaries: the registry and Triton through `Rollout`, Kafka through
    `trainer.corrections.kafka_reader`, the training recipe and the serving recipe."""

    settings: TrainerSettings
    rollout: Rollout
    read_timeout_s: float = 600.0

    def active_version(self) -> int | None:
        entry = self.rollout.current()
        return int(entry.active) if entry is not None else None

    def read_records(self, topics: list[str]) -> list[Record]:
        from aiokafka.errors import KafkaError

        from worker.security import kafka_client_kwargs

        security = kafka_client_kwargs(self.settings)
        read = kafka_reader(self.settings.kafka_bootstrap_servers, security, self.read_timeout_s)
        try:
            return read(topics)
        except (KafkaError, TimeoutError, RuntimeError) as exc:  # RuntimeError: no such topic
            raise RetrainError(f"cannot read {topics}: {exc}") from exc

    def train(
        self, task: str, data: Path, validation: Path, options: TrainOptions, precision: str
    ) -> Path:
        from trainer.train import train_and_export

        return train_and_export(
            task,
            data,
            settings=self.settings,
            options=options,
            model_name=self.rollout.model,
            validation_data=validation,
            precision=precision,  # type: ignore[arg-type]
        )

    def score(self, version_dir: Path, texts: Sequence[str]) -> np.ndarray:
        from trainer.onnx_runner import OnnxClassifier

        return OnnxClassifier.from_version_dir(version_dir).predict(texts, with_embedding=False)[0]

    def publish(self, version: int, share: float) -> Any:
        return self.rollout.publish(version, canary=share)
