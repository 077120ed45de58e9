"""Retry policy of the Triton client, with the gRPC call faked."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from worker.inference import Classification, InferenceRejected, TritonClassifier, backoff_delays


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
