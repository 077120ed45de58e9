"""The trainer refuses model names that would read or write outside the model repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from trainer import cli
from trainer.repository import UnsafeModelName, model_path, write_version
from trainer.rollout import Rollout

runner = CliRunner()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "news_topic" / "1").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "alias").symlink_to(root / "news_topic", target_is_directory=True)
    return root


@pytest.mark.parametrize("name", ["news_topic", "review-sentiment", "m.v2", "A1", "x" * 128])
def test_plain_names_are_allowed(repository: Path, name: str) -> None:
    assert model_path(repository, name) == repository / name


def test_symlink_to_a_model_inside_is_allowed(repository: Path) -> None:
    assert model_path(repository, "alias") == repository / "alias"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "not allowed"),
        ("..", "not allowed"),
        (".", "not allowed"),
        ("/etc/passwd", "not allowed"),
        ("a/b", "not allowed"),
        ("a\\b", "not allowed"),
        ("", "not allowed"),
        (" news", "not allowed"),
        ("news\n", "not allowed"),
        ("news\x00", "not allowed"),
        (".hidden", "not allowed"),
        ("-rf", "not allowed"),
        ("x" * 129, "not allowed"),
        ("nëws", "not allowed"),
        ("escape", "outside the repository"),
    ],
)
def test_escaping_names_are_refused(repository: Path, name: str, reason: str) -> None:
    with pytest.raises(UnsafeModelName, match=reason):
        model_path(repository, name)


def test_write_version_refuses_before_writing(repository: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeModelName):
        write_version(repository, "../evil", lambda target: None, labels=["a", "b"], classifier={})
    assert not (tmp_path / "evil").exists()
    assert os.listdir(tmp_path / "outside") == []


def test_rollout_refuses(repository: Path) -> None:
    with pytest.raises(UnsafeModelName):
        Rollout("../x", repository, "triton:1", "kafka:1")


@pytest.mark.parametrize(
    "args",
    [
        ["show", "../x"],
        ["publish", "/etc"],
        ["promote", "a/b", "2"],
        ["rollback", "escape"],
        ["gpu-config", "news_topic", "../x"],
        ["evaluate", "--model", "..", "--data", "unused.tsv"],
        ["train", "--task", "news", "--data", "unused.tsv", "--model", "../../tmp/x"],
    ],
)
def test_cli_refuses_with_a_clear_error(
    repository: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))
    monkeypatch.setenv("TRAINER_REPOSITORY", str(repository))
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert "refused:" in result.output
    assert "not allowed" in result.output or "outside the repository" in result.output
