"""triton_models/model.py and its recipe (contracts/serving.py) run in-process on a tiny real
version (ONNX Runtime, real tokenizer).

The served model sorts a batch by token length and runs it in chunks, each padded only to its
own longest text; these tests fix that the answers come back in input order and equal one
fully padded run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from contracts import serving
from tests.unit.tiny_model import MODEL, TEXTS, shared_version

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    """model.py imported with a stand-in for Triton's in-process module."""
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Logger = types.SimpleNamespace(log_info=lambda _m: None, log_warn=lambda _m: None)
    previous = sys.modules.get(stub.__name__)
    sys.modules[stub.__name__] = stub
    try:
        spec = importlib.util.spec_from_file_location(
            "served_model_chunks", REPO_ROOT / "triton_models" / "model.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if previous is None:
            sys.modules.pop(stub.__name__)
        else:
            sys.modules[stub.__name__] = previous


def load(served: types.ModuleType, version_dir: Path, rows_per_run: int):
    model = served.TritonPythonModel()
    config = {"parameters": {"ROWS_PER_RUN": {"string_value": str(rows_per_run)}}}
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_name": MODEL,
            "model_instance_kind": "CPU",
        }
    )
    return model


def test_pad_fills_to_the_longest_row_and_masks_the_rest() -> None:
    ids, mask = serving.pad([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_chunked_length_sorted_runs_answer_in_input_order(served, tmp_path_factory) -> None:
    version_dir = shared_version(tmp_path_factory)
    # Lengths deliberately out of order, so sorting moves rows between chunks.
    texts = [TEXTS[i % len(TEXTS)] * (1 + (7 * i) % 5) for i in range(11)]
    whole = load(served, version_dir, rows_per_run=64)
    chunked = load(served, version_dir, rows_per_run=2)
    sent_ids: list[np.ndarray] = []
    run = chunked.served.session.run

    def spy(names, feeds):
        sent_ids.append(feeds["input_ids"])
        return run(names, feeds)

    chunked.served.session.run = spy
    probs, embedding = chunked.served.run(texts, with_embedding=True)
    expected_probs, expected_embedding = whole.served.run(texts, with_embedding=True)

    assert [len(ids) for ids in sent_ids] == [2, 2, 2, 2, 2, 1]
    widths = [ids.shape[1] for ids in sent_ids]
    assert widths == sorted(widths), "chunks go shortest first"
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-5)
    single = np.concatenate([whole.served.run([text], with_embedding=False)[0] for text in texts])
    np.testing.assert_allclose(probs, single, atol=1e-5)


def test_threads_are_the_cores_shared_out_between_cpu_instances() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    two = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    gpu = {"instance_group": [{"count": 2, "kind": "KIND_GPU"}]}
    assert serving.default_intra_op_threads(two) == max(1, cores // 2)
    assert serving.default_intra_op_threads(gpu) == cores
    assert serving.default_intra_op_threads({}) == cores
