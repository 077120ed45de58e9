"""A freshly trained tiny classifier served by the real tritonserver through model.py.

Trains a few steps on real data, exports it, starts Triton (the binary from the PyTriton wheel,
via devstack's LocalTriton) on a tmp repository, and checks the served contract: PROBS,
LABELS, EMBEDDING on demand, bad UTF-8 tolerated, hot swap, pinning and refused versions; and
a hybrid version (transformer + TF-IDF blend) served by the same model.py beside the plain one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from contracts import serving, tensors
from contracts.triton_request import requested_outputs, text_input
from devstack.state import StateFile, pid_alive
from devstack.triton import LocalTriton
from tests.integration.data import data_file
from tests.integration.data import texts as news_texts
from trainer.onnx_runner import OnnxClassifier
from trainer.options import TrainOptions
from trainer.publish import PublishError, publish
from trainer.repository import write_version
from trainer.settings import TrainerSettings, available_cores
from trainer.tasks import get_task
from trainer.train import train_and_export
from worker.settings import WorkerSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "news_topic"
LABELS = list(get_task("news").labels)
EMBEDDING_DIM = 384


def train_tiny_news(repository: Path, model_name: str, *, steps: int, hybrid: bool) -> Path:
    """A tiny news version (32 tokens, 300 rows); `hybrid` given explicitly, as the news preset
    serves one."""
    options = TrainOptions.for_task(
        "news",
        max_steps=steps,
        max_length=32,
        batch_size=16,
        max_train_samples=300,
        max_eval_samples=64,
        torch_threads=min(2, available_cores()),
        progress=False,
        hybrid=hybrid,
    )
    return train_and_export(
        "news",
        data_file("news"),
        settings=TrainerSettings(),
        options=options,
        repository=repository,
        model_name=model_name,
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny version (12 steps, 32 tokens): enough to exercise the whole export path."""
    repository = tmp_path_factory.mktemp("triton_models")
    started = time.perf_counter()
    version_dir = train_tiny_news(repository, MODEL, steps=12, hybrid=False)
    elapsed = time.perf_counter() - started
    assert version_dir == repository / MODEL / "1"
    assert elapsed < 150, f"tiny train+export took {elapsed:.0f}s"
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert metrics["steps"] == 12
    assert metrics["parity_max_abs_prob_diff"] < 1e-3
    return repository


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    state_dir = tmp_path_factory.mktemp("state")
    settings = WorkerSettings(_env_file=None, state_dir=state_dir, model_repository=repository)
    server = LocalTriton(settings, StateFile(state_dir / "state.json"))
    asyncio.run(server.start())
    pid, start_time = server.pid, server.start_time
    try:
        yield server
    finally:
        try:
            asyncio.run(server.stop())
        finally:
            if pid_alive(pid, start_time):
                assert pid is not None
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def client(triton: LocalTriton) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


def infer(
    client: grpcclient.InferenceServerClient,
    texts: list[str] | list[bytes],
    outputs: list[str] | None = None,
) -> grpcclient.InferResult:
    requested = requested_outputs(outputs) if outputs else None
    return client.infer(MODEL, [text_input(texts)], outputs=requested)


def copy_version(repository: Path, source: Path, *, corrupt: bool = False) -> Path:
    """A new version from an existing one's artifacts (hard links: no re-training needed)."""

    def build(staging: Path) -> None:
        os.link(source / "tokenizer.json", staging / "tokenizer.json")
        if corrupt:
            (staging / "model.onnx").write_bytes(b"not an onnx graph")
        else:
            os.link(source / "model.onnx", staging / "model.onnx")

    classifier = json.loads((source / "classifier.json").read_text())
    return write_version(repository, MODEL, build, labels=LABELS, classifier=classifier)


def test_publish_loads_the_newest_version_and_reports_its_labels(
    repository: Path, triton: LocalTriton
) -> None:
    stale = repository / MODEL / ".tmp-crashed-writer"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half written")

    result = publish(MODEL, repository, triton.grpc_url)

    assert result.version == 1
    assert result.labels == LABELS
    assert result.load_seconds < 60


def test_batch_with_invalid_utf8(client: grpcclient.InferenceServerClient) -> None:
    texts = [
        b"Stocks tumbled on Wall Street after the central bank raised interest rates.",
        b"caf\xc3 \xff\xfe broken \x80 bytes",
        b"The striker scored twice as the home team won the cup final.",
    ]
    result = infer(client, texts, [tensors.PROBS, tensors.LABELS, tensors.EMBEDDING])

    probs = result.as_numpy(tensors.PROBS)
    assert probs.shape == (3, len(LABELS))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    labels = result.as_numpy(tensors.LABELS)
    assert labels.shape == (3, len(LABELS))
    assert [[label.decode() for label in row] for row in labels] == [LABELS] * 3
    embedding = result.as_numpy(tensors.EMBEDDING)
    assert embedding.shape == (3, EMBEDDING_DIM)
    assert np.isfinite(embedding).all()
    assert result.get_response().model_version == "1"


def test_embedding_is_only_returned_when_requested(
    client: grpcclient.InferenceServerClient,
) -> None:
    result = infer(client, [b"only probabilities please"], [tensors.PROBS, tensors.LABELS])
    assert result.as_numpy(tensors.PROBS).shape == (1, len(LABELS))
    assert result.as_numpy(tensors.EMBEDDING) is None
    everything = infer(client, [b"no outputs named: Triton returns all of them"])
    assert everything.as_numpy(tensors.EMBEDDING).shape == (1, EMBEDDING_DIM)


def test_trainer_evaluate_gets_the_probabilities_triton_serves(
    repository: Path, client: grpcclient.InferenceServerClient
) -> None:
    """The same texts through model.py in Triton and through `trainer evaluate`'s runner.

    Cut to 2..26 words, so the length-sorted chunks of the served recipe differ in width.
    """
    texts = [" ".join(text.split()[: 2 + i % 25]) for i, text in enumerate(news_texts("news", 48))]
    served = infer(client, texts, [tensors.PROBS])
    version = served.get_response().model_version

    runner = OnnxClassifier.from_version_dir(repository / MODEL / version)
    probs, _ = runner.predict(texts, batch_size=64, with_embedding=False)

    np.testing.assert_allclose(probs, served.as_numpy(tensors.PROBS), rtol=0, atol=1e-5)


def test_new_version_swaps_in_and_an_old_one_can_be_pinned(
    repository: Path, triton: LocalTriton, client: grpcclient.InferenceServerClient
) -> None:
    version_two = copy_version(repository, repository / MODEL / "1")
    assert version_two.name == "2"

    assert publish(MODEL, repository, triton.grpc_url).version == 2
    assert infer(client, [b"after the swap"]).get_response().model_version == "2"

    assert publish(MODEL, repository, triton.grpc_url, version=1).version == 1
    assert infer(client, [b"after the rollback"]).get_response().model_version == "1"
    assert not client.is_model_ready(MODEL, "2")


def test_broken_version_is_refused_and_the_serving_one_stays(
    repository: Path, triton: LocalTriton, client: grpcclient.InferenceServerClient
) -> None:
    broken = copy_version(repository, repository / MODEL / "1", corrupt=True)

    with pytest.raises(PublishError, match=f"refused version {broken.name}"):
        publish(MODEL, repository, triton.grpc_url)

    result = infer(client, [b"still answering"], [tensors.PROBS])
    assert result.as_numpy(tensors.PROBS).shape == (1, len(LABELS))
    assert result.get_response().model_version == "1"


HYBRID = "news_hybrid"


@pytest.fixture(scope="module")
def hybrid_version(repository: Path) -> Path:
    """A tiny hybrid version beside the plain one: 8 steps, a TF-IDF model on the same rows."""
    started = time.perf_counter()
    version_dir = train_tiny_news(repository, HYBRID, steps=8, hybrid=True)
    assert time.perf_counter() - started < 150
    assert (version_dir / serving.TFIDF_ONNX).is_file()
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert metrics["hybrid"]["parity_max_abs_prob_diff"] < 1e-5
    classifier = json.loads((version_dir / "classifier.json").read_text())
    assert classifier["hybrid"]["weight"] == metrics["hybrid"]["weight"]
    return version_dir


def test_a_hybrid_version_serves_the_probabilities_trainer_evaluate_computes(
    hybrid_version: Path, triton: LocalTriton, client: grpcclient.InferenceServerClient
) -> None:
    """The same model.py serves the plain model and the hybrid one side by side."""
    assert publish(HYBRID, hybrid_version.parent.parent, triton.grpc_url).version == 1
    texts = [" ".join(text.split()[: 2 + i % 25]) for i, text in enumerate(news_texts("news", 48))]
    outputs = requested_outputs([tensors.PROBS, tensors.EMBEDDING, tensors.LABELS])

    served = client.infer(HYBRID, [text_input(texts)], outputs=outputs)
    runner = OnnxClassifier.from_version_dir(hybrid_version)
    probs, embedding = runner.predict(texts, batch_size=64)

    assert runner.served.hybrid is not None
    np.testing.assert_allclose(served.as_numpy(tensors.PROBS), probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(served.as_numpy(tensors.EMBEDDING), embedding, rtol=0, atol=1e-5)
    assert [label.decode() for label in served.as_numpy(tensors.LABELS)[0]] == LABELS


def test_the_hybrid_serves_the_recorded_blend_and_the_transformers_embedding(
    hybrid_version: Path, client: grpcclient.InferenceServerClient
) -> None:
    weight = json.loads((hybrid_version / "classifier.json").read_text())["hybrid"]["weight"]
    texts = news_texts("news", 16)
    transformer = OnnxClassifier.from_version_dir(hybrid_version)
    tfidf = transformer.served.hybrid
    assert tfidf is not None
    transformer.served.hybrid = None
    alone, alone_embedding = transformer.predict(texts)
    outputs = requested_outputs([tensors.PROBS, tensors.EMBEDDING])

    served = client.infer(HYBRID, [text_input(texts)], outputs=outputs)

    expected = serving.blend(alone, tfidf.probs(texts), weight)
    np.testing.assert_allclose(served.as_numpy(tensors.PROBS), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        served.as_numpy(tensors.EMBEDDING), alone_embedding, rtol=0, atol=1e-5
    )
