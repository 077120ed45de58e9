"""`trainer retrain`: corrections merged into training rows and never held out, both versions
scored on the same held-out rows, a canary published unless the new version is worse by more
than the margin. Training, scoring, Kafka and publishing are faked and recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import trainer.retrain as retrain_module
from contracts.review import FEEDBACK_TOPIC, REVIEW_TOPIC, Feedback, Review
from trainer import cli
from trainer.data import training_split
from trainer.options import TrainOptions
from trainer.repository import data_fingerprint, list_versions, next_version
from trainer.retrain import RetrainError, RetrainRequest, retrain
from trainer.settings import TrainerSettings
from worker.client import Record

LABELS = ("World", "Sports", "Business", "Sci/Tech")
MODEL = "news_topic"
ACTIVE_SEED = 7
"""The split seed the active version recorded; the settings say 42."""


def record(topic: str, offset: int, value: Review | Feedback) -> Record:
    return Record(topic, 0, offset, value.id.encode(), value.to_json())


def review(offset: int, id: str, text: str, model: str = MODEL) -> Record:
    scores = dict.fromkeys(LABELS, 0.25)
    value = Review(id, text, "World", 0.25, scores, model, "1", "news.raw", "2026-01-01T00:00:00Z")
    return record(REVIEW_TOPIC, offset, value)


def feedback(offset: int, id: str, label: str) -> Record:
    return record(FEEDBACK_TOPIC, offset, Feedback(id, label, "ann", "2026-01-02T00:00:00Z"))


@dataclass
class World:
    """A repository with an active version 1, a base file and the corrections on the topics."""

    settings: TrainerSettings
    base: Path
    held_out_text: str
    """A row the active version held out, which a person corrects."""
    train_text: str
    corrected: dict[str, str]
    """Text -> the label a person gave it."""
    records: list[Record]


@pytest.fixture
def world(tmp_path: Path) -> World:
    base = tmp_path / "base.tsv"
    rows = [f"{label} story number {i}\t{label}" for label in LABELS for i in range(50)]
    base.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    version = tmp_path / "repo" / MODEL / "1"
    version.mkdir(parents=True)
    classifier = {"task": "news", "labels": list(LABELS), "precision": "int8"}
    (version / "classifier.json").write_text(json.dumps(classifier))
    (version / "labels.json").write_text(json.dumps(list(LABELS)))
    options = {"seed": ACTIVE_SEED, "validation_fraction": 0.2, "max_steps": 3}
    metrics = {"options": options, "data_fingerprint": data_fingerprint(base)}
    (version / "metrics.json").write_text(json.dumps(metrics))
    split = training_split(base, LABELS, 0.2, ACTIVE_SEED)
    held_out, trained = split.validation[0], split.train[0]
    relabel = {row.text: LABELS[(row.label + 1) % 4] for row in (held_out, trained)}
    corrected = {**relabel, "a brand new story": "Sports"}
    ids = {text: f"r{n}" for n, text in enumerate(corrected)}
    records = [review(n, ids[text], text) for n, text in enumerate(corrected)]
    records += [feedback(n, ids[text], label) for n, (text, label) in enumerate(corrected.items())]
    records += [review(9, "x", "a great film", model="review_sentiment"), feedback(9, "x", "World")]
    settings = TrainerSettings(
        repository=tmp_path / "repo", retrain_dir=tmp_path / "runs", seed=42, torch_threads=1
    )
    return World(settings, base, held_out.text, trained.text, corrected, records)


def jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class FakeIO:
    """Records every boundary call. Version 1 gets every corrected text and the first
    `active_errors` held-out rows wrong; the version it trains the first `new_errors`."""

    world: World
    active_errors: int = 0
    new_errors: int = 0
    active: int | None = 1
    calls: list[tuple] = field(default_factory=list)
    wrong: dict[str, set[str]] = field(default_factory=dict)

    def active_version(self) -> int | None:
        return self.active

    def read_records(self, topics: list[str]) -> list[Record]:
        self.calls.append(("read", topics))
        return list(self.world.records)

    def train(
        self, task: str, data: Path, validation: Path, options: TrainOptions, precision: str
    ) -> Path:
        self.calls.append(("train", task, data, validation, options, precision))
        held_out = [row["text"] for row in jsonl(validation)]
        model_dir = self.world.settings.repository / MODEL
        version = model_dir / str(next_version(model_dir))
        version.mkdir()
        self.wrong = {
            "1": set(held_out[: self.active_errors]) | set(self.world.corrected),
            version.name: set(held_out[: self.new_errors]),
        }
        return version

    def score(self, version_dir: Path, texts: list[str]) -> np.ndarray:
        self.calls.append(("score", version_dir.name, list(texts)))
        truth = {**{t: t.split(" story")[0] for t in texts}, **self.world.corrected}
        probs = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for row, text in enumerate(texts):
            label = LABELS.index(truth[text])
            wrong = text in self.wrong[version_dir.name]
            probs[row, (label + 1) % 4 if wrong else label] = 1.0
        return probs

    def publish(self, version: int, share: float) -> dict[str, Any]:
        self.calls.append(("publish", version, share))
        return {}

    def of(self, kind: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == kind]


def run(world: World, io: FakeIO, **request: Any):
    return retrain(RetrainRequest(MODEL, world.base, **request), world.settings, io)


def test_a_version_no_worse_than_the_margin_is_published_as_a_canary(world: World) -> None:
    io = FakeIO(world, active_errors=1, new_errors=1)
    report = run(world, io, canary=0.25)
    assert io.of("publish") == [("publish", 2, 0.25)]
    assert report.published and report.reason == "published as a canary taking 25% of traffic"
    written = json.loads((world.settings.repository / MODEL / "2" / "retrain.json").read_text())
    assert written["published"] is True and written["new_version"] == 2
    assert written["scores"]["corrections"]["active"]["accuracy"] == 0.0
    assert written["scores"]["corrections"]["new"]["accuracy"] == 1.0


def test_a_drop_of_exactly_the_margin_is_allowed(world: World) -> None:
    io = FakeIO(world, active_errors=0, new_errors=1)
    held_out_rows = 40 - 1  # 20 % of 200 rows, less the corrected one
    report = run(world, io, max_drop=1 / held_out_rows)
    assert report.scores["held_out"]["active"]["rows"] == held_out_rows
    assert report.published and len(io.of("publish")) == 1


def test_worse_by_more_than_the_margin_is_refused_and_nothing_is_published(
    world: World,
) -> None:
    io = FakeIO(world, active_errors=0, new_errors=1)
    report = run(world, io, max_drop=0.01)
    assert io.of("publish") == []
    assert not report.published
    assert report.reason.startswith("refused: held-out accuracy 0.9744 is 2.56 points below")
    model_dir = world.settings.repository / MODEL
    assert list_versions(model_dir) == [1]  # out of Triton's and `trainer publish`'s view
    (refused,) = (model_dir / ".refused").iterdir()
    assert refused.name.startswith("2-")
    assert json.loads((refused / "retrain.json").read_text())["published"] is False


def test_both_versions_are_scored_on_the_same_held_out_rows_which_hold_no_correction(
    world: World,
) -> None:
    io = FakeIO(world)
    report = run(world, io)
    (_, task, data, validation, options, precision) = io.of("train")[0]
    held_out = [row["text"] for row in jsonl(validation)]
    scored = {(name, tuple(texts)) for _, name, texts in io.of("score")}
    corrections = tuple(world.corrected)
    assert scored == {
        ("1", tuple(held_out)),
        ("2", tuple(held_out)),
        ("1", corrections),
        ("2", corrections),
    }
    expected = training_split(world.base, LABELS, 0.2, ACTIVE_SEED).validation
    assert held_out == [row.text for row in expected if row.text != world.held_out_text]
    trained = {row["text"]: row["label"] for row in jsonl(data)}
    assert {text: trained[text] for text in world.corrected} == world.corrected
    assert len(trained) == 160 + 1 + 1  # training rows + the moved held-out row + the new one
    assert (options.seed, task, precision) == (ACTIVE_SEED, "news", "int8")
    assert report.held_out["moved_to_training"] == 1 and report.held_out["seed"] == ACTIVE_SEED
    assert report.held_out["active_trained_on_this_base"] is True


def test_the_report_says_what_the_corrections_changed_and_what_was_ignored(
    world: World,
) -> None:
    report = run(world, FakeIO(world))
    assert report.corrections == {"read": 4, "used": 3, "ignored": {"other_model": 1}}
    assert (report.changes["relabelled"], report.changes["added"]) == (2, 1)
    assert report.changes["added_by_label"] == {"Sports": 1}
    assert report.train_rows == 162


def test_nothing_to_learn_from_or_compare_with_is_refused_before_training(
    world: World,
) -> None:
    io = FakeIO(world, active=None)
    with pytest.raises(RetrainError, match="no active version"):
        run(world, io)
    world.records = [r for r in world.records if r.topic == REVIEW_TOPIC]
    io = FakeIO(world)
    with pytest.raises(RetrainError, match="no usable corrections"):
        run(world, io)
    assert io.of("train") == [] and io.of("publish") == []


def test_retrain_command_prints_the_comparison_and_exits_1_when_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "console", Console(width=200, no_color=True))
    monkeypatch.setenv("TRAINER_RETRAIN_DIR", str(world.settings.retrain_dir))
    fakes = iter([FakeIO(world, new_errors=0), FakeIO(world, new_errors=3)])
    monkeypatch.setattr(retrain_module, "LiveIO", lambda settings, rollout: next(fakes))
    args = ["retrain", "--model", MODEL, "--data", str(world.base)]
    args += ["--repository", str(world.settings.repository), "--canary", "20%"]
    published = CliRunner().invoke(cli.app, args, catch_exceptions=False)
    assert published.exit_code == 0, published.output
    assert "4 feedback records read, 3 used, ignored: other_model 1" in published.output
    assert "published as a canary taking 20% of traffic" in published.output
    assert "held-out (39)" in published.output and "corrections (3)" in published.output
    refused = CliRunner().invoke(cli.app, args, catch_exceptions=False)
    assert refused.exit_code == 1, refused.output
    assert "refused: held-out accuracy" in refused.output


def test_the_live_boundaries_train_the_rollouts_model_on_the_written_files(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.train as train_module
    from trainer.retrain import LiveIO
    from trainer.rollout import Rollout

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        train_module, "train_and_export", lambda *args, **kwargs: calls.append(kwargs) or args
    )
    rollout = Rollout(MODEL, world.settings.repository, "triton:1", "kafka:1")
    monkeypatch.setattr(rollout, "current", lambda: None)
    io = LiveIO(world.settings, rollout)
    options = TrainOptions.for_task("news")
    assert io.train("news", Path("t.jsonl"), Path("h.jsonl"), options, "int8") == (
        "news",
        Path("t.jsonl"),
    )
    assert calls[0]["model_name"] == MODEL and calls[0]["validation_data"] == Path("h.jsonl")
    assert calls[0]["precision"] == "int8" and calls[0]["settings"] is world.settings
    assert io.active_version() is None
