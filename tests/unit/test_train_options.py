"""`TrainOptions` is the one declaration of the training knobs: `trainer train`'s flags, their
precedence over the task presets, and the settings and logging the CLI builds once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from trainer import cli
from trainer import train as train_module
from trainer.options import TrainOptions
from trainer.settings import TrainerSettings

runner = CliRunner()


def train_command() -> Any:
    return typer.main.get_command(cli.app).commands["train"]  # type: ignore[attr-defined]


def test_every_option_field_is_a_train_flag_that_defaults_to_not_given() -> None:
    params = {param.name: param for param in train_command().params}
    for field in dataclasses.fields(TrainOptions):
        if field.name == "progress":
            assert field.name not in params
            continue
        flag = params[field.name]
        assert f"--{field.name.replace('_', '-')}" in flag.opts
        assert flag.default is None, field.name
        shown = field.metadata["fallback"] or repr(field.default)
        assert f"{field.metadata['help']} (default: {shown}," in flag.help, field.name


def test_given_options_win_over_the_task_preset_which_wins_over_the_defaults() -> None:
    options = TrainOptions.for_task("news", epochs=2, max_steps=None)
    assert options.epochs == 2  # given
    assert options.max_length == 128 and options.patience == 2  # news preset
    assert options.batch_size == 32 and options.max_steps is None  # field defaults
    with pytest.raises(TypeError, match="unknown training option"):
        TrainOptions.for_task("news", epoch=2)


def test_fallbacks_fill_only_what_is_unset() -> None:
    options = TrainOptions(seed=None, torch_threads=3).with_fallbacks(seed=42, torch_threads=8)
    assert (options.seed, options.torch_threads) == (42, 3)
    assert TrainOptions(seed=0).with_fallbacks(seed=42, torch_threads=1).seed == 0


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """`train_and_export` replaced by a recorder that writes a version with a metrics.json."""
    calls: dict[str, Any] = {}

    def record(task: str, data: Path, **kwargs: Any) -> Path:
        calls.update(task=task, data=data, **kwargs)
        version = tmp_path / "repo" / "news_topic" / "1"
        version.mkdir(parents=True)
        (version / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
        return version

    monkeypatch.setattr(train_module, "train_and_export", record)
    return calls


def test_train_passes_flags_as_options_and_builds_settings_once(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[TrainerSettings] = []

    class CountedSettings(TrainerSettings):
        def __init__(self, **values: Any) -> None:
            super().__init__(**values)
            built.append(self)

    monkeypatch.setattr(cli, "TrainerSettings", CountedSettings)
    args = ["train", "--task", "news", "--data", str(tmp_path / "d.tsv")]
    flags = ["--epochs", "2", "--learning-rate", "0.001", "--head", "cls", "--keep", "3"]
    result = runner.invoke(cli.app, [*args, *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert captured["options"] == TrainOptions.for_task(
        "news", epochs=2, learning_rate=0.001, head="cls"
    )
    assert captured["keep"] == 3 and captured["precision"] == "fp32"
    assert len(built) == 1 and captured["settings"] is built[0]
    assert "news_topic version 1" in result.output


def test_the_cli_configures_structlog_from_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import worker.logging

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(worker.logging, "configure_logging", lambda *a: calls.append(a))
    monkeypatch.setenv("TRAINER_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("TRAINER_LOG_FORMAT", "json")
    result = runner.invoke(cli.app, ["list", "--repository", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [("DEBUG", "json")]
