"""Model-repository layout: version numbering, atomic writes, config rendering and pinning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from trainer import repository as repo
from trainer.publish import config_override

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELS = ("negative", "positive")


def fake_build(staging: Path) -> None:
    (staging / "model.onnx").write_bytes(b"onnx")
    (staging / "tokenizer.json").write_text("{}")


def write(
    repository: Path,
    build: Callable[[Path], None] = fake_build,
    metrics: dict[str, float] | None = None,
) -> Path:
    return repo.write_version(
        repository,
        "sentiment",
        build,
        labels=LABELS,
        classifier={"max_length": 32},
        metrics=metrics if metrics is not None else {"accuracy": 0.5},
    )


def parse(config: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(config, model_config_pb2.ModelConfig())


def test_list_and_next_version_ignore_non_versions(tmp_path: Path) -> None:
    assert repo.list_versions(tmp_path / "missing") == []
    assert repo.next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "10", ".tmp-abc", "latest", "0"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert repo.list_versions(tmp_path) == [1, 3, 10]
    assert repo.latest_version(tmp_path) == 10
    assert repo.next_version(tmp_path) == 11


def test_write_version_lays_out_a_complete_version(tmp_path: Path) -> None:
    version_dir = write(tmp_path)
    assert version_dir == tmp_path / "sentiment" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "classifier.json",
        "contracts",
        "labels.json",
        "metrics.json",
        "model.onnx",
        "model.py",
        "tokenizer.json",
    ]
    for name in ("__init__.py", "serving.py", "tensors.py"):
        copied = version_dir / "contracts" / name
        assert copied.read_bytes() == (REPO_ROOT / "contracts" / name).read_bytes()
    assert json.loads((version_dir / "labels.json").read_text()) == list(LABELS)
    assert json.loads((version_dir / "classifier.json").read_text()) == {"max_length": 32}
    source = REPO_ROOT / "triton_models" / "model.py"
    assert (version_dir / "model.py").read_bytes() == source.read_bytes()
    assert parse((tmp_path / "sentiment" / "config.pbtxt").read_text()).name == "sentiment"
    assert write(tmp_path) == tmp_path / "sentiment" / "2"


def test_gaps_are_not_reused(tmp_path: Path) -> None:
    (tmp_path / "sentiment" / "5").mkdir(parents=True)
    assert write(tmp_path).name == "6"


def test_version_is_invisible_until_complete(tmp_path: Path) -> None:
    model_dir = tmp_path / "sentiment"
    seen: list[list[int]] = []

    def build(staging: Path) -> None:
        fake_build(staging)
        assert staging.parent == model_dir and staging.name.startswith(repo.TMP_PREFIX)
        seen.append(repo.list_versions(model_dir))

    write(tmp_path, build)
    write(tmp_path, build)
    assert seen == [[], [1]]


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(staging: Path) -> None:
        fake_build(staging)
        raise RuntimeError("parity check failed")

    with pytest.raises(RuntimeError, match="parity"):
        write(tmp_path, broken)
    with pytest.raises(repo.RepositoryError, match="model.onnx"):
        write(tmp_path, lambda staging: (staging / "tokenizer.json").write_text("{}"))
    model_dir = tmp_path / "sentiment"
    assert [p.name for p in model_dir.iterdir()] == ["config.pbtxt"]
    assert write(tmp_path).name == "1"


def test_concurrent_writer_taking_the_number_moves_us_to_the_next(tmp_path: Path) -> None:
    def build_while_another_writer_finishes(staging: Path) -> None:
        fake_build(staging)
        other = staging.parent / "1"
        other.mkdir()
        (other / "model.onnx").write_bytes(b"theirs")

    assert write(tmp_path, build_while_another_writer_finishes).name == "2"
    assert (tmp_path / "sentiment" / "1" / "model.onnx").read_bytes() == b"theirs"


def test_metrics_are_written_after_build_so_build_can_add_to_them(tmp_path: Path) -> None:
    metrics: dict[str, float] = {"accuracy": 0.9}

    def build(staging: Path) -> None:
        fake_build(staging)
        metrics["export_seconds"] = 1.5

    version_dir = write(tmp_path, build, metrics=metrics)
    assert json.loads((version_dir / "metrics.json").read_text()) == {
        "accuracy": 0.9,
        "export_seconds": 1.5,
    }


def test_existing_config_is_kept(tmp_path: Path) -> None:
    model_dir = tmp_path / "sentiment"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text("# tuned by hand\n")
    assert repo.ensure_config(model_dir) is False
    write(tmp_path)
    assert (model_dir / "config.pbtxt").read_text() == "# tuned by hand\n"


def test_repository_model_py_wins_over_the_source_tree(tmp_path: Path) -> None:
    assert repo.find_model_py(tmp_path) == REPO_ROOT / "triton_models" / "model.py"
    (tmp_path / "model.py").write_text("# deployed copy\n")
    assert repo.find_model_py(tmp_path) == tmp_path / "model.py"
    assert (write(tmp_path) / "model.py").read_text() == "# deployed copy\n"


def test_render_config_is_a_complete_triton_config() -> None:
    config = parse(
        repo.render_config(
            "news_topic", preferred_batch_sizes=(8, 128), parameters={"INTRA_OP_THREADS": "2"}
        )
    )
    assert config.name == "news_topic"
    assert config.backend == "python"
    assert config.max_batch_size == 64
    assert config.version_policy.latest.num_versions == 1
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("TEXT", model_config_pb2.TYPE_STRING, [1])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("PROBS", model_config_pb2.TYPE_FP32, [-1]),
        ("EMBEDDING", model_config_pb2.TYPE_FP32, [-1]),
        ("LABELS", model_config_pb2.TYPE_STRING, [-1]),
    ]
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 5000
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)
    ]
    assert config.parameters["INTRA_OP_THREADS"].string_value == "2"


@pytest.mark.parametrize("name", ["news_topic", "review_sentiment"])
def test_committed_configs_match_the_renderer(name: str) -> None:
    committed = REPO_ROOT / "triton_models" / name / "config.pbtxt"
    assert committed.read_text() == repo.render_config(name)


def test_config_override_keeps_the_file_policy_or_pins_a_version(tmp_path: Path) -> None:
    repo.ensure_config(tmp_path, "news_topic")
    latest = json_format.Parse(config_override(tmp_path), model_config_pb2.ModelConfig())
    assert latest == parse((tmp_path / "config.pbtxt").read_text())
    pinned = json_format.Parse(config_override(tmp_path, 3), model_config_pb2.ModelConfig())
    assert list(pinned.version_policy.specific.versions) == [3]
    assert not pinned.version_policy.HasField("latest")
    assert pinned.max_batch_size == 64
