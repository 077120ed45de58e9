"""Async gRPC calls to Triton, with retry so an outage delays messages but never drops them."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from contracts import tensors
from contracts.triton_request import requested_outputs, text_input
from worker.metrics import TRITON_LATENCY

log = structlog.get_logger(__name__)

# gRPC status codes that say the request itself is bad: retrying the same batch cannot help.
PERMANENT_STATUSES = frozenset({"StatusCode.INVALID_ARGUMENT"})


@dataclass(frozen=True, slots=True)
class Classification:
    """Triton's answer for one batch: probabilities per text, in `labels` order."""

    model: str
    version: str
    labels: list[str]
    probs: np.ndarray
    embeddings: np.ndarray | None = None
    """Pooled embeddings [texts, dim], when the classifier was asked for them (drift)."""


class InferenceRejected(Exception):
    """Triton refused the batch as invalid; the caller isolates the offending texts."""


class Classifier(Protocol):
    async def classify(
        self, model: str, texts: list[str], version: str | None = None, *, retry: bool = True
    ) -> Classification: ...


def backoff_delays(initial: float, maximum: float):
    """Exponential backoff: initial, 2x, 4x ... capped at maximum, forever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


def first_row_labels(result: grpcclient.InferResult) -> list[str]:
    """The LABELS of the first text: every row holds the same labels, and `as_numpy` would
    decode all of them in Python, ~1 µs per label and text."""
    response = result.get_response()
    for index, output in enumerate(response.outputs):
        if output.name != tensors.LABELS:
            continue
        if index >= len(response.raw_output_contents):
            return [b.decode("utf-8") for b in result.as_numpy(tensors.LABELS)[0]]
        raw, offset, labels = response.raw_output_contents[index], 0, []
        for _ in range(output.shape[-1]):
            (size,) = struct.unpack_from("<I", raw, offset)
            labels.append(raw[offset + 4 : offset + 4 + size].decode("utf-8"))
            offset += 4 + size
        return labels
    raise InferenceServerException(f"Triton's answer has no {tensors.LABELS} output")


class TritonClassifier:
    """Classifies batches of texts with a Triton model that takes `TEXT` and returns `PROBS`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        with_embeddings: bool = False,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = url
        self._tls = dict(tls or {})  # `worker.security.triton_client_kwargs(settings)`
        names = (tensors.PROBS, tensors.LABELS, tensors.EMBEDDING)
        self._outputs = names if with_embeddings else names[:2]
        self._timeout_s = timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._client: grpcclient.InferenceServerClient | None = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self._url, **self._tls)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _infer_once(
        self, model: str, texts: list[str], version: str | None
    ) -> Classification:
        inputs, outputs = [text_input(texts)], requested_outputs(self._outputs)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.client.infer(
                model,
                inputs,
                model_version=version or "",
                outputs=outputs,
                client_timeout=self._timeout_s,
            )
            outcome = "ok"
        finally:
            TRITON_LATENCY.labels(model, outcome).observe(time.perf_counter() - started)
        probs = result.as_numpy(tensors.PROBS)
        labels = first_row_labels(result)
        version = result.get_response().model_version
        embeddings = (
            result.as_numpy(tensors.EMBEDDING) if tensors.EMBEDDING in self._outputs else None
        )
        return Classification(model, version, labels, probs, embeddings)

    async def classify(
        self, model: str, texts: list[str], version: str | None = None, *, retry: bool = True
    ) -> Classification:
        """Retry transient failures (server down, timeouts, model not loaded) until they pass.

        `version` pins the request to one version (canary routing); None lets Triton choose.
        With `retry=False` (candidates and shadows) a failure raises at once.
        """
        started = time.monotonic()
        delays = backoff_delays(self._retry_initial_s, self._retry_max_s)
        for attempt, delay in enumerate(delays, start=1):
            try:
                result = await self._infer_once(model, texts, version)
            except InferenceServerException as exc:
                if str(exc.status()) in PERMANENT_STATUSES:
                    raise InferenceRejected(exc.message() or str(exc)) from exc
                if not retry:
                    raise
                log.warning(
                    "triton_unavailable",
                    model=model,
                    version=version,
                    attempt=attempt,
                    retry_in_s=delay,
                    status=str(exc.status()),
                    error=exc.message(),
                )
            else:
                if attempt > 1:
                    log.info(
                        "triton_recovered",
                        model=model,
                        attempts=attempt,
                        outage_s=round(time.monotonic() - started, 2),
                    )
                return result
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # backoff_delays is infinite
