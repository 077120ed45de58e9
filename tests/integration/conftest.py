"""The real local stack for integration tests: Apache Kafka (KRaft) and Triton on loopback.

One stack per test session, started and stopped by pid; tiny models trained once per session.
Each test gets its own topics and consumer group, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack import worker_process
from devstack.local import LocalStack
from tests.integration.data import data_file
from worker.settings import Route, WorkerSettings
from worker.topics import ensure_topics

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ["news_topic", "review_sentiment"]


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton repository with a tiny trained version of each model (seconds, not minutes)."""
    from trainer.options import TrainOptions
    from trainer.settings import TrainerSettings
    from trainer.train import train_and_export

    repository = tmp_path_factory.mktemp("triton_models")
    for task, model in (("news", "news_topic"), ("reviews", "review_sentiment")):
        options = TrainOptions.for_task(
            task,
            max_steps=6,
            max_length=32,
            batch_size=16,
            max_train_samples=400,
            max_eval_samples=200,
        )
        train_and_export(
            task,
            data_file(task),
            settings=TrainerSettings(),
            options=options,
            repository=repository,
            model_name=model,
        )
    return repository


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("state")
    settings = WorkerSettings(
        _env_file=None, state_dir=state_dir, model_repository=model_repository
    )
    local = LocalStack(settings)
    try:
        asyncio.run(local.up(load_models=MODELS))
        yield local
    finally:
        asyncio.run(local.down())


@pytest.fixture
def routes_settings(stack: LocalStack, tmp_path: Path) -> WorkerSettings:
    """Settings with topics and consumer group unique to this test, topics created."""
    tag = uuid.uuid4().hex[:8]
    settings = stack.settings.model_copy(
        update={
            "app_id": f"labelstream-test-{tag}",
            "routes": [
                Route(source=f"news.raw.{tag}", model="news_topic", sink=f"news.labelled.{tag}"),
                Route(
                    source=f"reviews.raw.{tag}",
                    model="review_sentiment",
                    sink=f"reviews.labelled.{tag}",
                ),
            ],
            "deadletter_topic": f"labelstream.deadletter.{tag}",
            "drift": stack.settings.drift.model_copy(update={"topic": f"labelstream.drift.{tag}"}),
            "state_dir": tmp_path / "worker",
            "triton_retry_max_s": 1.0,
        }
    )
    asyncio.run(ensure_topics(settings))
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[WorkerSettings], subprocess.Popen]]:
    """Start `worker run` as a real process; every one started is stopped by pid afterwards."""
    processes: list[subprocess.Popen] = []

    def start(settings: WorkerSettings) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(processes)}.log"
        processes.append(worker_process.start_worker(settings, log, cwd=tmp_path))
        return processes[-1]

    yield start
    for process in processes:
        worker_process.stop_worker(process)


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault cases' counted outcomes, as the README's table rows."""
    from tests.integration.faults import OUTCOMES

    if not OUTCOMES:
        return
    terminalreporter.section("fault cases (counted by message id)")
    terminalreporter.write_line("| case | sent | labelled | dead-lettered | duplicates | lost |")
    for row in OUTCOMES:
        terminalreporter.write_line(
            f"| {row['case']} | {row['sent']} | {row['labelled']} | {row['dead_lettered']} "
            f"| {row['duplicates']} | {row['lost']} |"
        )
