"""Repository management: pruning, version info, model listing, fingerprints, GPU configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from trainer import repository as repo

LABELS = ("negative", "positive")


def add_version(
    repository: Path,
    model: str = "sentiment",
    metrics: dict | None = None,
    classifier: dict | None = None,
) -> Path:
    def build(staging: Path) -> None:
        (staging / "model.onnx").write_bytes(b"onnx")
        (staging / "tokenizer.json").write_text("{}")

    return repo.write_version(
        repository,
        model,
        build,
        labels=LABELS,
        classifier=classifier if classifier is not None else {"max_length": 32},
        metrics=metrics if metrics is not None else {"accuracy": 0.5},
    )


def test_prune_keeps_the_newest_and_protected(tmp_path: Path) -> None:
    for _ in range(5):
        add_version(tmp_path)
    model_dir = tmp_path / "sentiment"
    assert repo.prune_versions(model_dir, keep=2, protect={1}) == [2, 3]
    assert repo.list_versions(model_dir) == [1, 4, 5]
    assert repo.prune_versions(model_dir, keep=2) == [1]
    assert repo.prune_versions(model_dir, keep=5) == []
    assert repo.list_versions(model_dir) == [4, 5]
    assert sorted(p.name for p in model_dir.iterdir()) == ["4", "5", "config.pbtxt"]
    assert add_version(tmp_path).name == "6"


def test_prune_never_goes_below_one(tmp_path: Path) -> None:
    add_version(tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        repo.prune_versions(tmp_path / "sentiment", keep=0)
    assert repo.prune_versions(tmp_path / "sentiment", keep=1) == []
    assert repo.prune_versions(tmp_path / "missing", keep=1) == []


def test_version_info_reads_what_the_version_records(tmp_path: Path) -> None:
    add_version(tmp_path, metrics={"accuracy": 0.8})
    add_version(
        tmp_path,
        metrics={
            "accuracy": 0.9,
            "macro_f1": 0.88,
            "created_at": "2026-01-01T00:00:00+00:00",
            "data": "train.tsv",
            "data_fingerprint": "sha256:abc",
            "options": {"seed": 1},
        },
        classifier={"max_length": 64, "base_model": "minilm", "task": "reviews"},
    )
    model_dir = tmp_path / "sentiment"
    newest = repo.version_info(model_dir)
    assert newest["version"] == 2 and newest["model"] == "sentiment"
    assert newest["labels"] == list(LABELS)
    assert {k: newest[k] for k in ("accuracy", "macro_f1", "created_at", "data_fingerprint")} == {
        "accuracy": 0.9,
        "macro_f1": 0.88,
        "created_at": "2026-01-01T00:00:00+00:00",
        "data_fingerprint": "sha256:abc",
    }
    assert (newest["base_model"], newest["task"], newest["max_length"]) == ("minilm", "reviews", 64)
    assert "options" not in newest
    assert newest["files"]["model.onnx"] == 4
    old = repo.version_info(model_dir, 1)
    assert old["accuracy"] == 0.8 and "macro_f1" not in old and "created_at" not in old
    (model_dir / "1" / "metrics.json").write_text("{not json")
    assert "accuracy" not in repo.version_info(model_dir, 1)
    with pytest.raises(repo.RepositoryError, match="version 9 not found"):
        repo.version_info(model_dir, 9)
    with pytest.raises(repo.RepositoryError, match="no versions"):
        repo.version_info(tmp_path / "missing")


def test_list_models_summarises_each_model(tmp_path: Path) -> None:
    assert repo.list_models(tmp_path / "missing") == []
    add_version(tmp_path, "b_model", metrics={"accuracy": 0.7, "macro_f1": 0.6})
    add_version(tmp_path, "b_model", metrics={"accuracy": 0.9})
    add_version(tmp_path, "a_model")
    repo.ensure_config(tmp_path / "c_empty")
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "model.py").write_text("# repository copy\n")
    assert repo.list_models(tmp_path) == [
        {"model": "a_model", "versions": [1], "newest": 1, "accuracy": 0.5},
        {"model": "b_model", "versions": [1, 2], "newest": 2, "accuracy": 0.9},
        {"model": "c_empty", "versions": [], "newest": None},
    ]


def test_data_fingerprint_is_a_short_content_hash(tmp_path: Path) -> None:
    first = tmp_path / "a.tsv"
    first.write_bytes(b"text\tlabel\nhi\tpositive\n")
    copy = tmp_path / "b.tsv"
    copy.write_bytes(first.read_bytes())
    expected = hashlib.sha256(first.read_bytes()).hexdigest()[:16]
    assert repo.data_fingerprint(first) == repo.data_fingerprint(copy) == f"sha256:{expected}"
    copy.write_bytes(b"text\tlabel\nhi\tnegative\n")
    assert repo.data_fingerprint(copy) != repo.data_fingerprint(first)


def test_gpu_device_renders_a_gpu_instance_group(tmp_path: Path) -> None:
    assert repo.instance_kind("gpu") == "KIND_GPU" and repo.instance_kind("CPU") == "KIND_CPU"
    with pytest.raises(ValueError, match="device"):
        repo.instance_kind("tpu")
    model_dir = tmp_path / "news"
    assert repo.ensure_config(model_dir, instance_kind=repo.instance_kind("gpu"), max_batch_size=8)
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert config.max_batch_size == 8
    repo.write_config(model_dir)
    assert (model_dir / "config.pbtxt").read_text() == repo.render_config("news")
    assert json.dumps(repo.list_models(tmp_path))
