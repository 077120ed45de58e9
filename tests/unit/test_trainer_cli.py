"""`trainer list`, `trainer show` and `trainer evaluate` on a tmp repository with a tiny version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.tiny_model import CREATED_AT, LABELS, MODEL, TEXTS, shared_version
from trainer import cli
from trainer.metrics import classification_scores
from trainer.onnx_runner import OnnxClassifier

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich truncates cells to the terminal width; tests read whole values."""
    monkeypatch.setattr(cli, "console", Console(width=300, no_color=True))


@pytest.fixture
def repository(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(shared_version(tmp_path_factory).parent, root / MODEL)
    return root


@pytest.fixture
def labelled(repository: Path, tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """12 texts labelled with the model's own predictions, the last 3 flipped: accuracy 0.75."""
    predicted = OnnxClassifier.from_version_dir(repository / MODEL / "1").predict(TEXTS)[0]
    truth = [int(p) if i < 9 else 1 - int(p) for i, p in enumerate(predicted.argmax(1))]
    path = tmp_path / "data" / "eval.tsv"
    path.parent.mkdir()
    rows = [f"{text}\t{LABELS[label]}" for text, label in zip(TEXTS, truth, strict=True)]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    return path, classification_scores(truth, predicted.argmax(1), len(LABELS))


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(root.rglob("*"))
    }


def invoke(*args: str):
    return runner.invoke(cli.app, list(args), catch_exceptions=False)


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    for command in ("train", "retrain", "publish", "list", "show", "evaluate"):
        assert command in result.output


def test_list_shows_models_versions_and_scores(repository: Path) -> None:
    shutil.copytree(repository / MODEL / "1", repository / MODEL / "3")
    result = invoke("list", "--repository", str(repository))
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if MODEL in line)
    assert "1, 3" in row and "0.7500" in row and "0.7000" in row
    empty = invoke("list", "--repository", str(repository / "nothing"))
    assert empty.exit_code == 0 and "no models" in empty.output


def test_show_prints_scores_and_provenance(repository: Path) -> None:
    metrics_path = repository / MODEL / "1" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["variants"] = {
        "fp32": {"accuracy": 0.75, "texts_per_s": 100.0, "cpu_only_measurement": False},
        "fp16": {"accuracy": 0.5, "texts_per_s": 90.0, "cpu_only_measurement": True},
    }
    metrics_path.write_text(json.dumps(metrics))
    result = invoke("show", MODEL, "--repository", str(repository))
    assert result.exit_code == 0, result.output
    for expected in (
        f"{MODEL} version 1",
        "0.7500",
        CREATED_AT,
        "sha256:0123456789abcdef",
        "tiny-random-bert",
        "file model.onnx",
        "negative, positive",
        "fp16 (cpu only)",
    ):
        assert expected in result.output
    missing = invoke("show", MODEL, "5", "--repository", str(repository))
    assert missing.exit_code == 1 and "version 5 not found" in missing.output


def test_evaluate_scores_the_served_files_and_writes_nothing(
    repository: Path, labelled: tuple[Path, dict[str, float]]
) -> None:
    data, expected = labelled
    assert expected["accuracy"] == 0.75
    before = snapshot(repository, data.parent)
    args = ["evaluate", "--model", MODEL, "--data", str(data), "--repository", str(repository)]
    result = invoke(*args, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "0.7500" in result.output
    assert f"{expected['macro_f1']:.4f}" in result.output
    assert str(repository / MODEL / "1" / "model.onnx") in result.output
    assert snapshot(repository, data.parent) == before
    missing = invoke(*args, "--version", "4")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_evaluate_rejects_unknown_labels(repository: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.tsv"
    data.write_text("text\tlabel\nhello\tneutral\n")
    result = invoke(
        "evaluate", "--model", MODEL, "--data", str(data), "--repository", str(repository)
    )
    assert result.exit_code == 2 and "neutral" in result.output


class FakeTriton:
    """Answers like the served model (PROBS from the same ONNX files, LABELS per row)."""

    calls: list[tuple[str, str, int]] = []

    def __init__(self, url: str, version_dir: Path) -> None:
        self.classifier = OnnxClassifier.from_version_dir(version_dir)

    def infer(self, model: str, inputs: list, model_version: str = "", outputs=None):
        from tritonclient.utils import deserialize_bytes_tensor

        (text,) = inputs
        texts = [b.decode("utf-8") for b in deserialize_bytes_tensor(text._raw_content)]
        assert text.shape() == [len(texts), 1]
        FakeTriton.calls.append((model, model_version, len(texts)))
        probs = self.classifier.predict(texts, with_embedding=False)[0]
        labels = np.array([[label.encode() for label in LABELS]] * len(texts), dtype=object)
        answer = {"PROBS": probs, "LABELS": labels}

        class Result:
            def as_numpy(self, name: str) -> np.ndarray:
                return answer[name]

            def get_response(self):
                return type("Response", (), {"model_version": model_version or "1"})()

        return Result()

    def close(self) -> None:
        pass


def test_evaluate_through_triton_uses_the_server_labels(
    repository: Path, labelled: tuple[Path, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tritonclient.grpc as grpcclient

    data, _ = labelled
    FakeTriton.calls = []
    monkeypatch.setattr(
        grpcclient,
        "InferenceServerClient",
        lambda url: FakeTriton(url, repository / MODEL / "1"),
    )
    result = invoke(
        "evaluate",
        "--model",
        MODEL,
        "--data",
        str(data),
        "--triton-url",
        "triton:8001",
        "--version",
        "1",
        "--batch-size",
        "5",
        "--repository",
        str(repository / "not-needed"),
    )
    assert result.exit_code == 0, result.output
    assert "0.7500" in result.output and "triton triton:8001" in result.output
    assert FakeTriton.calls == [(MODEL, "1", 1), (MODEL, "1", 5), (MODEL, "1", 5), (MODEL, "1", 2)]
