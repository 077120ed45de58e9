"""A bad environment variable is reported by its name, without a traceback or a secret."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError
from rich.console import Console

from trainer import cli as trainer_cli
from trainer.settings import TrainerSettings
from worker import cli as worker_cli
from worker.settings import WorkerSettings, describe_settings_error, get_settings


def _error(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(**values)
    return caught.value


def test_field_error_names_the_variable_and_its_value() -> None:
    text = describe_settings_error(_error(max_batch="abc"))
    assert text.startswith("MAX_BATCH='abc': Input should be a valid integer")


def test_nested_error_names_the_variable_and_where_inside_it() -> None:
    text = describe_settings_error(_error(routes=[{"source": "a.raw", "sink": "a.out"}]))
    assert text.startswith("ROUTES [0.model]")
    assert "Field required" in text


def test_a_transaction_timeout_that_a_live_worker_could_hit_is_refused() -> None:
    text = describe_settings_error(_error(transaction_timeout_s=30, transaction_step_timeout_s=15))
    assert "TRANSACTION_TIMEOUT_S must be at least 3 x TRANSACTION_STEP_TIMEOUT_S" in text
    assert (
        WorkerSettings(transaction_timeout_s=45, transaction_step_timeout_s=15).exactly_once
        is False
    )
    assert WorkerSettings(processing_guarantee="exactly_once").exactly_once


def test_secret_values_are_never_shown() -> None:
    text = describe_settings_error(_error(kafka_sasl_password=987654321))
    assert text.startswith("KAFKA_SASL_PASSWORD: ")
    assert "987654321" not in text


def test_prefix_for_the_trainer() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainerSettings(torch_threads="many")
    text = describe_settings_error(caught.value, env_prefix="TRAINER_")
    assert text.startswith("TRAINER_TORCH_THREADS='many'")


def test_worker_cli_exits_2_with_one_line_per_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_BATCH", "abc")
    monkeypatch.setattr("sys.argv", ["worker", "topics"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            worker_cli.main()
    finally:
        get_settings.cache_clear()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err
    assert "MAX_BATCH='abc'" in err
    assert "Traceback" not in err


def test_trainer_cli_exits_2_with_the_prefixed_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAINER_TORCH_THREADS", "abc")
    monkeypatch.setattr("sys.argv", ["trainer", "list"])
    monkeypatch.setattr(trainer_cli, "console", Console(file=sys.stderr, width=200))
    with pytest.raises(SystemExit) as exited:
        trainer_cli.main()
    assert exited.value.code == 2
    assert "TRAINER_TORCH_THREADS='abc'" in capsys.readouterr().err


def test_other_validation_errors_are_not_called_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the settings class is reworded; any other ValidationError stays a real error."""

    def broken() -> None:
        from worker.schemas import InputMessage

        InputMessage.model_validate({})

    monkeypatch.setattr(worker_cli, "app", broken)
    with pytest.raises(ValidationError):
        worker_cli.main()
