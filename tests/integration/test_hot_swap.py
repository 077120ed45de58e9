"""Hot swaps under load: publish, canary, promote and roll back while messages flow.

Versions are hard-linked copies of the session's trained news model (no re-training): what
is tested is the swap path, Triton's and the registry's, not the model.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest

from devstack.local import LocalStack
from tests.integration.data import data_file, texts
from trainer.publish import PublishError
from trainer.repository import ensure_config, write_version
from trainer.rollout import Rollout
from worker.client import produce, read_topics
from worker.registry import read_registry
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

pytestmark = pytest.mark.integration

SOURCE_MODEL = "news_topic"
MESSAGES = int(os.environ.get("LABELSTREAM_SWAP_MESSAGES", "20000"))


def copy_version(repository: Path, model: str, *, corrupt: str | None = None) -> Path:
    """A new version of `model` from the session's news model (hard links, seconds)."""
    source = repository / SOURCE_MODEL / "1"

    def build(staging: Path) -> None:
        for name in ("tokenizer.json", "model.onnx", "reference.json", "tfidf.onnx"):
            if (source / name).exists():  # tfidf.onnx: only a hybrid version has one
                os.link(source / name, staging / name)
        if corrupt == "onnx":
            (staging / "model.onnx").unlink()
            (staging / "model.onnx").write_bytes(b"not an onnx graph")

    labels = json.loads((source / "labels.json").read_text())
    classifier = json.loads((source / "classifier.json").read_text())
    ensure_config(repository / model, model)
    version = write_version(repository, model, build, labels=labels, classifier=classifier)
    if corrupt == "model.py":  # after writing: write_version installs the repository's model.py
        (version / "model.py").unlink()
        (version / "model.py").write_text("raise RuntimeError('broken model.py')\n")
    return version


def failures(stack: LocalStack, model: str) -> int:
    """Failed requests of `model` as Triton counts them (all versions, all reasons)."""
    url = f"http://127.0.0.1:{stack.triton.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()  # noqa: S310 - loopback
    pattern = rf'^nv_inference_request_failure\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, flags=re.M)))


def rollout(stack: LocalStack, model: str) -> Rollout:
    return Rollout(
        model=model,
        repository=stack.settings.model_repository,
        triton_url=stack.settings.triton_url,
        bootstrap_servers=stack.settings.kafka_bootstrap_servers,
        registry_topic=stack.settings.registry_topic,
        grace_s=2.0,
        by="test",
    )


def swap_settings(routes_settings: WorkerSettings, model: str) -> WorkerSettings:
    tag = routes_settings.app_id.rsplit("-", 1)[-1]
    settings = routes_settings.model_copy(
        update={"routes": [Route(source=f"swap.raw.{tag}", model=model, sink=f"swap.out.{tag}")]}
    )
    asyncio.run(ensure_topics(settings))
    return settings


def test_publish_canary_promote_rollback_under_load(stack, routes_settings, start_worker):
    model = "swap_news"
    repository = stack.settings.model_repository
    for _ in range(2):
        copy_version(repository, model)
    steps = rollout(stack, model)
    steps.publish(1)
    settings = swap_settings(routes_settings, model)
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    corpus = texts("news", 500)
    messages = [
        (f"s-{i}".encode(), orjson.dumps({"id": f"s-{i}", "text": corpus[i % len(corpus)]}))
        for i in range(MESSAGES)
    ]
    start_worker(settings)

    async def labelled_count() -> int:
        return len(await read_topics(bootstrap, [route.sink]))

    async def until(count: int) -> None:
        while await labelled_count() < count:
            await asyncio.sleep(0.5)

    async def scenario() -> list:
        sending = asyncio.create_task(produce(bootstrap, route.source, messages))
        await until(MESSAGES // 10)
        canary = await asyncio.to_thread(steps.publish, 2, 0.3)
        assert canary.candidate is not None and canary.candidate.role == "canary"
        await until(MESSAGES * 3 // 10)
        promoted = await asyncio.to_thread(steps.promote, 2)
        assert promoted.active == "2" and promoted.previous == "1"
        await until(MESSAGES * 6 // 10)
        rolled = await asyncio.to_thread(steps.rollback)
        assert rolled.active == "1" and rolled.candidate is None
        await sending
        found = await read_topics(bootstrap, [route.sink], expect=MESSAGES, timeout_s=600)
        return found

    records = asyncio.run(scenario())
    bodies = [orjson.loads(r.value) for r in records]
    counts = Counter(body["id"] for body in bodies)
    assert len(counts) == MESSAGES, f"{MESSAGES - len(counts)} messages not labelled"
    assert max(counts.values()) == 1, "a message was labelled twice without a crash"
    versions = Counter(body["model"]["version"] for body in bodies)
    assert set(versions) == {"1", "2"}, versions
    assert all(body["model"]["name"] == model for body in bodies)
    assert failures(stack, model) == 0
    entry = asyncio.run(read_registry(bootstrap, stack.settings.registry_topic))[model]
    assert (entry.active, entry.event, entry.by) == ("1", "rollback", "test")


@pytest.mark.parametrize("corrupt", ["onnx", "model.py"])
def test_broken_version_is_refused_and_the_cli_says_why(stack, tmp_path, corrupt):
    model = f"broken_{corrupt.replace('.', '_')}"
    repository = stack.settings.model_repository
    copy_version(repository, model)
    rollout(stack, model).publish(1)
    broken = copy_version(repository, model, corrupt=corrupt)
    env = {
        **os.environ,
        "TRAINER_REPOSITORY": str(repository),
        "TRAINER_TRITON_URL": stack.settings.triton_url,
        "TRAINER_KAFKA_BOOTSTRAP_SERVERS": stack.settings.kafka_bootstrap_servers,
        "TRAINER_REGISTRY_TOPIC": stack.settings.registry_topic,
    }
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "publish", model, "--canary", "10%"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refused" in result.stdout and broken.name in result.stdout
    entry = asyncio.run(
        read_registry(stack.settings.kafka_bootstrap_servers, stack.settings.registry_topic)
    )[model]
    assert entry.active == "1" and entry.candidate is None
    with pytest.raises(PublishError):  # the API refuses the same way
        rollout(stack, model).promote(int(broken.name))
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack.settings.triton_url)
    assert client.is_model_ready(model, "1")
    client.close()


def test_shadow_agreement_is_high_for_a_copy_and_lower_for_another_model(
    stack, routes_settings, start_worker
):
    from trainer.options import TrainOptions
    from trainer.settings import TrainerSettings
    from trainer.train import train_and_export

    model = "shadow_news"
    repository = stack.settings.model_repository
    copy_version(repository, model)  # 1
    copy_version(repository, model)  # 2: the same model
    options = TrainOptions.for_task(
        "news",
        max_steps=8,
        max_length=32,
        batch_size=16,
        max_train_samples=400,
        max_eval_samples=100,
        seed=7,
    )
    train_and_export(  # 3: trained differently (other seed, other rows)
        "news",
        data_file("news"),
        settings=TrainerSettings(),
        options=options,
        repository=repository,
        model_name=model,
    )
    steps = rollout(stack, model)
    steps.publish(1)
    settings = swap_settings(routes_settings, model)
    settings = settings.model_copy(
        update={"drift": settings.drift.model_copy(update={"window_messages": 100})}
    )
    route = settings.routes[0]
    bootstrap = settings.kafka_bootstrap_servers
    corpus = texts("news", 200)
    start_worker(settings)

    def batch(prefix: str) -> list[tuple[bytes, bytes]]:
        return [
            (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": text}))
            for i, text in enumerate(corpus)
        ]

    async def shadow_reports(version: str, prefix: str) -> list[dict]:
        await asyncio.to_thread(steps.publish, int(version), None, True)
        await produce(bootstrap, route.source, batch(prefix))
        for _ in range(120):
            found = await read_topics(bootstrap, [settings.drift.topic])
            reports = [orjson.loads(r.value) for r in found]
            shadowed = [r for r in reports if (r.get("shadow") or {}).get("version") == version]
            if sum(r["shadow"]["compared"] for r in shadowed) >= 100:
                return shadowed
            await asyncio.sleep(1)
        raise AssertionError(f"no shadow reports for version {version}")

    async def scenario() -> tuple[list[dict], list[dict]]:
        same = await shadow_reports("2", "same")
        await asyncio.to_thread(steps.rollback)
        other = await shadow_reports("3", "other")
        return same, other

    same, other = asyncio.run(scenario())

    def agreement(reports: list[dict]) -> float:
        compared = sum(r["shadow"]["compared"] for r in reports)
        return sum(r["shadow"]["agreement"] * r["shadow"]["compared"] for r in reports) / compared

    assert agreement(same) >= 0.99
    assert agreement(other) < 0.9
    assert agreement(same) - agreement(other) > 0.1
    records = asyncio.run(read_topics(bootstrap, [route.sink], expect=2 * len(corpus)))
    assert {orjson.loads(r.value)["model"]["version"] for r in records} == {"1"}
