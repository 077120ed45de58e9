"""The console scripts as a user runs them, against the real local stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devstack.worker_process import worker_env
from tests.integration.data import SAMPLE_FILES
from trainer.baseline import tfidf_baseline
from trainer.data import load_split
from worker.client import read_topics

pytestmark = pytest.mark.integration


def cli(module: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_topics_produce_and_tail(routes_settings, start_worker, tmp_path):
    settings = routes_settings
    news = settings.routes[0]
    env = worker_env(settings)
    created = cli("worker", "topics", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr

    lines = [orjson.dumps({"id": f"cli-{i}", "text": f"Shares rose {i}%"}) for i in range(5)]
    file = tmp_path / "news.jsonl"
    file.write_bytes(b"\n".join([*lines, b'{"id": "cli-bad"}']) + b"\n")

    start_worker(settings)
    produced = cli("worker", "produce", news.source, str(file), env=env, cwd=tmp_path)
    assert produced.returncode == 0, produced.stderr
    assert "produced 6 messages" in produced.stderr

    labelled = asyncio.run(
        read_topics(settings.kafka_bootstrap_servers, [news.sink], expect=5, timeout_s=120)
    )
    assert sorted(orjson.loads(r.value)["id"] for r in labelled) == [f"cli-{i}" for i in range(5)]

    shown = cli("worker", "tail", news.sink, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "5 records" in shown.stdout
    for i in range(5):
        assert f"cli-{i}" in shown.stdout
    assert "news_topic:1" in shown.stdout

    dead = asyncio.run(read_topics(settings.kafka_bootstrap_servers, [settings.deadletter_topic]))
    assert [orjson.loads(r.value)["error"]["type"] for r in dead] == ["missing_field"]


def train_cli(repository: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(
        "trainer",
        "train",
        "--task", "news",
        "--data", str(SAMPLE_FILES["news"]),
        "--repository", str(repository),
        "--max-steps", "2",
        "--max-length", "16",
        "--batch-size", "8",
        "--torch-threads", "1",
        *extra,
        env={**os.environ, "TRAINER_SEED": "7"},
        cwd=tmp_path,
    )  # fmt: skip


def test_trainer_train_writes_a_version(tmp_path):
    repository = tmp_path / "repo"
    result = train_cli(repository, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    version = repository / "news_topic" / "1"
    for name in (
        "model.py",
        "model.onnx",
        "tokenizer.json",
        "labels.json",
        "metrics.json",
        "reference.json",
        "report.md",
        "confusion_matrix.png",
    ):
        assert (version / name).is_file(), name
    assert (repository / "news_topic" / "config.pbtxt").is_file()
    labels = orjson.loads((version / "labels.json").read_bytes())
    assert labels == ["World", "Sports", "Business", "Sci/Tech"]
    metrics = orjson.loads((version / "metrics.json").read_bytes())
    assert {"accuracy", "macro_f1", "ece", "per_class", "confusion_matrix"} <= set(metrics)
    # The baseline refitted here on the same seeded split must score what the version recorded.
    split = load_split(SAMPLE_FILES["news"], labels, validation_fraction=0.1, seed=7)
    baseline = tfidf_baseline(
        [example.text for example in split.train],
        [example.label for example in split.train],
        [example.text for example in split.validation],
        [example.label for example in split.validation],
        labels,
        seed=7,
    )
    assert metrics["examples"] == len(split.validation)
    assert metrics["baseline"]["accuracy"] == pytest.approx(baseline["accuracy"])
    assert metrics["baseline"]["macro_f1"] == pytest.approx(baseline["macro_f1"])
    assert metrics["margin_over_baseline_points"] == pytest.approx(
        round(100 * (metrics["accuracy"] - baseline["accuracy"]), 2)
    )
    assert "Margin over the classical baseline" in (version / "report.md").read_text()


def test_trainer_int8_variant_gpu_config_and_pruning(tmp_path):
    repository = tmp_path / "repo"
    for _ in range(2):
        result = train_cli(repository, tmp_path, "--quantize", "int8", "--keep", "1")
        assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (repository / "news_topic").iterdir() if p.name.isdigit()) == [
        "2"
    ]
    version = repository / "news_topic" / "2"
    assert (version / "model.fp32.onnx").is_file()
    assert (version / "model.onnx").stat().st_size < (version / "model.fp32.onnx").stat().st_size
    variants = orjson.loads((version / "metrics.json").read_bytes())["variants"]
    assert set(variants) == {"fp32", "int8"}
    assert "accuracy_delta" in variants["int8"] and "texts_per_s" in variants["int8"]

    gpu = train_cli(repository, tmp_path, "--device", "gpu", "--precision", "fp16")
    assert gpu.returncode == 0, gpu.stderr[-2000:]
    assert "KIND_GPU" in (repository / "news_topic" / "config.pbtxt").read_text()
    both = train_cli(repository, tmp_path, "--quantize", "int8", "--precision", "fp16")
    assert both.returncode == 2


def test_trainer_refuses_unknown_labels(tmp_path):
    data = tmp_path / "bad.tsv"
    data.write_text("text\tlabel\nsome text\tWeather\nother text\tWorld\n")
    result = cli(
        "trainer",
        "train",
        "--task",
        "news",
        "--data",
        str(data),
        "--repository",
        str(tmp_path / "repo"),
        "--max-steps",
        "1",
        env=dict(os.environ),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Weather" in result.stdout + result.stderr
    assert not (tmp_path / "repo" / "news_topic" / "1").exists()


def test_trainer_list_show_and_evaluate_against_live_triton(stack, model_repository, tmp_path):
    env = {**os.environ, "TRAINER_REPOSITORY": str(model_repository)}
    listed = cli("trainer", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "news_topic" in listed.stdout and "review_sentiment" in listed.stdout

    shown = cli("trainer", "show", "news_topic", "1", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "accuracy" in shown.stdout

    local = cli(
        "trainer", "evaluate", "--model", "news_topic", "--data", str(SAMPLE_FILES["news"]),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    live = cli(
        "trainer", "evaluate", "--model", "news_topic", "--data", str(SAMPLE_FILES["news"]),
        "--triton-url", stack.triton_grpc_url, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert live.returncode == 0, live.stderr
    # The artifact scored locally and the live server give the same accuracy.
    local_accuracy = [line for line in local.stdout.splitlines() if "accuracy" in line]
    live_accuracy = [line for line in live.stdout.splitlines() if "accuracy" in line]
    assert local_accuracy and [a.split()[-1] for a in local_accuracy] == [
        a.split()[-1] for a in live_accuracy
    ]


def test_trainer_fine_tunes_any_local_base_model(tmp_path):
    import shutil

    from transformers import BertConfig, BertModel

    from trainer.settings import packaged_base_model

    base = tmp_path / "tiny-bert"
    config = BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(packaged_base_model() / name, base / name)

    repository = tmp_path / "repo"
    result = train_cli(repository, tmp_path, "--base-model", str(base))
    assert result.returncode == 0, result.stderr[-2000:]
    classifier = orjson.loads((repository / "news_topic" / "1" / "classifier.json").read_bytes())
    assert classifier["embedding_dim"] == 16
    assert classifier["base_model"] == str(base)
