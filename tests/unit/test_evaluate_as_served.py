"""`trainer evaluate` runs a version exactly as Triton runs it through model.py.

Every ONNX Runtime session both paths open is recorded: its intra-op threads and every run's
inputs. The served side is model.py's `execute` on one request (a stand-in for Triton's
in-process module), configured with the JSON Triton makes of the model's config.pbtxt; the
evaluate side is the runner `trainer evaluate` uses, on the same version and texts.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tests.unit.tiny_model import MODEL, TEXTS, shared_version
from trainer.onnx_runner import OnnxClassifier

REPO_ROOT = Path(__file__).resolve().parents[2]
# 40 texts of 3 to 16 tokens: more than one served chunk, of different widths.
VARIED = [" ".join(TEXTS[i % len(TEXTS)].split() * (1 + i % 4)) for i in range(40)]


class _Request:
    """What model.py reads from a Triton request: the TEXT column and the asked outputs."""

    def __init__(self, texts: list[str]) -> None:
        self.column = np.array([[text.encode("utf-8")] for text in texts], dtype=object)

    def requested_output_names(self) -> list[str]:
        return ["PROBS", "LABELS"]


def _stub_backend() -> types.ModuleType:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Logger = types.SimpleNamespace(log_info=lambda _m: None, log_warn=lambda _m: None)
    stub.get_input_tensor_by_name = lambda request, _name: types.SimpleNamespace(
        as_numpy=lambda: request.column
    )
    stub.Tensor = lambda name, array: (name, array)
    stub.InferenceResponse = lambda output_tensors, error=None: types.SimpleNamespace(
        output_tensors=dict(output_tensors), error=error
    )
    return stub


@pytest.fixture
def served_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """triton_models/model.py imported as the Python backend's stub imports it."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stub_backend())
    spec = importlib.util.spec_from_file_location(
        "served_model_as_evaluated", REPO_ROOT / "triton_models" / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every InferenceSession opened from now on: its threads and its runs' inputs."""
    opened: list[dict] = []

    class Recording(ort.InferenceSession):
        def __init__(self, path, sess_options=None, providers=None, **kwargs) -> None:
            super().__init__(path, sess_options=sess_options, providers=providers, **kwargs)
            threads = sess_options.intra_op_num_threads if sess_options else None
            self.record = {"threads": threads, "runs": []}
            opened.append(self.record)

        def run(self, output_names, input_feed, run_options=None):
            feeds = {name: np.array(value) for name, value in input_feed.items()}
            self.record["runs"].append((list(output_names), feeds))
            return super().run(output_names, input_feed, run_options)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return opened


def triton_model_config(model_dir: Path) -> dict:
    """config.pbtxt as the JSON Triton hands model.py's `initialize`."""
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def served_runs(module: types.ModuleType, version_dir: Path, sessions: list[dict]) -> dict:
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(triton_model_config(version_dir.parent)),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_name": MODEL,
            "model_instance_kind": "CPU",
        }
    )
    record = sessions[-1]
    record["runs"].clear()  # the load-time probe is not part of the request
    (response,) = model.execute([_Request(VARIED)])
    assert response.error is None
    return {**record, "probs": response.output_tensors["PROBS"]}


def evaluate_runs(version_dir: Path, sessions: list[dict]) -> dict:
    runner = OnnxClassifier.from_version_dir(version_dir)
    record = sessions[-1]
    record["runs"].clear()
    probs, _ = runner.predict(VARIED, batch_size=64, with_embedding=False)
    return {**record, "probs": probs}


def test_trainer_evaluate_runs_the_batches_padding_and_threads_the_served_model_runs(
    served_module, sessions, tmp_path_factory
) -> None:
    version_dir = shared_version(tmp_path_factory)

    served = served_runs(served_module, version_dir, sessions)
    evaluated = evaluate_runs(version_dir, sessions)

    assert evaluated["threads"] == served["threads"]
    shapes = [feeds["input_ids"].shape for _names, feeds in served["runs"]]
    assert [feeds["input_ids"].shape for _names, feeds in evaluated["runs"]] == shapes
    assert len(shapes) > 1, "the texts must span more than one served chunk"
    for (served_names, served_feeds), (names, feeds) in zip(
        served["runs"], evaluated["runs"], strict=True
    ):
        assert names == served_names
        assert feeds.keys() == served_feeds.keys()
        for key, value in feeds.items():
            np.testing.assert_array_equal(value, served_feeds[key])
    np.testing.assert_array_equal(evaluated["probs"], served["probs"])
