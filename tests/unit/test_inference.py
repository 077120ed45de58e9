"""Retry policy of the Triton client, with the gRPC call faked."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from worker.inference import (
    Classification,
    InferenceRejected,
    TritonClassifier,
    backoff_delays,
    first_row_labels,
)


def test_backoff_doubles_up_to_the_cap():
    delays = backoff_delays(0.1, 0.5)
    assert [next(delays) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


class Flaky(TritonClassifier):
    def __init__(self, failures: list[InferenceServerException]) -> None:
        super().__init__("127.0.0.1:1", retry_initial_s=0.001, retry_max_s=0.002)
        self.failures = failures
        self.calls = 0

    async def _infer_once(
        self, model: str, texts: list[str], version: str | None
    ) -> Classification:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return Classification(model, "2", ["a", "b"], np.full((len(texts), 2), 0.5))


async def test_unavailable_is_retried_until_it_answers():
    down = InferenceServerException("connection refused", status="StatusCode.UNAVAILABLE")
    timeout = InferenceServerException("deadline", status="StatusCode.DEADLINE_EXCEEDED")
    client = Flaky([down, down, timeout])
    result = await client.classify("m", ["x", "y"])
    assert client.calls == 4
    assert result.version == "2" and result.probs.shape == (2, 2)


async def test_invalid_argument_is_not_retried():
    bad = InferenceServerException("bad input", status="StatusCode.INVALID_ARGUMENT")
    client = Flaky([bad])
    with pytest.raises(InferenceRejected, match="bad input"):
        await client.classify("m", ["x"])
    assert client.calls == 1


def infer_result(rows: list[list[str]]):
    """A Triton answer as the gRPC client receives it: PROBS, then LABELS as raw BYTES."""
    from tritonclient.grpc import InferResult, service_pb2
    from tritonclient.utils import serialize_byte_tensor

    response = service_pb2.ModelInferResponse(model_name="m", model_version="1")
    for name, datatype in (("PROBS", "FP32"), ("LABELS", "BYTES")):
        output = response.outputs.add(name=name, datatype=datatype)
        output.shape.extend([len(rows), len(rows[0])])
    probs = np.full((len(rows), len(rows[0])), 0.25, dtype=np.float32)
    labels = np.array([[label.encode() for label in row] for row in rows], dtype=np.object_)
    response.raw_output_contents.extend([probs.tobytes(), serialize_byte_tensor(labels).item()])
    return InferResult(response)


def test_first_row_labels_match_the_clients_own_decoding():
    rows = [["World", "Sports", "Business", "Sci/Tech"], ["négatif", "", "x", "Sci/Tech"]]
    result = infer_result(rows)
    assert first_row_labels(result) == rows[0]
    assert first_row_labels(result) == [b.decode() for b in result.as_numpy("LABELS")[0]]
    assert first_row_labels(infer_result(rows[1:])) == rows[1]
