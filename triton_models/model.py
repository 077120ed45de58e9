"""Triton Python-backend model that serves any classifier exported by `trainer`.

The trainer copies this file into every version directory next to `model.onnx`,
`tokenizer.json`, `labels.json`, `classifier.json` and `contracts/` (the serving recipe,
`contracts/serving.py`, and the tensor names, `contracts/tensors.py`), so a version is
self-contained and runs unchanged in the official Triton container (which needs only
`onnxruntime` or `onnxruntime-gpu`, `tokenizers` and `numpy` in the stub's Python environment).
`trainer evaluate` runs the same recipe outside Triton, so its scores are the served scores.
A hybrid version also carries `tfidf.onnx`; the recipe blends its probabilities into PROBS.

Inputs/outputs (see config.pbtxt and contracts/tensors.py):
  TEXT       TYPE_STRING [1]   one UTF-8 text per batch row (invalid bytes are replaced)
  PROBS      TYPE_FP32   [-1]  class probabilities, in LABELS order
  EMBEDDING  TYPE_FP32   [-1]  mean-pooled last hidden state; computed only when requested
  LABELS     TYPE_STRING [-1]  label names, repeated per row, so clients learn them per version

Config parameters (all optional, string values): INTRA_OP_THREADS and ROWS_PER_RUN (see
contracts/serving.py), and
  ENABLE_TENSORRT   "true" to try the TensorRT provider on GPU instances (engine builds take
                    minutes per new shape range, so it is opt-in; CUDA is used otherwise)
  TRT_FP16          "true" lets TensorRT build FP16 engines even for an fp32 model.onnx; a
                    version exported with `--precision fp16` (classifier.json) always gets them
  TRT_CACHE_DIR     where TensorRT engines are cached across restarts (default: a temp dir);
                    the model_warmup in configs/gpu.pbtxt builds them before the first request
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The version directory first: its own copy of the contracts wins over any installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from contracts import serving, tensors  # noqa: E402


def choose_providers(
    kind: str,
    device_id: int,
    available: list[str],
    *,
    tensorrt: bool = False,
    fp16: bool = False,
    cache_dir: str = "",
) -> list:
    """ONNX Runtime providers, best first: TensorRT (opt-in), CUDA, then always CPU.

    Only GPU instances get GPU providers, and only those this onnxruntime build offers, so the
    same file serves on a CPU-only build, in the pytriton wheel and in the GPU container.
    """
    providers: list = []
    if kind == "GPU":
        device = {"device_id": device_id}
        if tensorrt and "TensorrtExecutionProvider" in available:
            trt = {**device, "trt_fp16_enable": fp16}
            if cache_dir:
                trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache_dir)
            providers.append(("TensorrtExecutionProvider", trt))
        if "CUDAExecutionProvider" in available:
            providers.append(("CUDAExecutionProvider", dict(device)))
    providers.append("CPUExecutionProvider")
    return providers


def _providers(args: dict, model_config: dict, log, precision: str = "fp32") -> list:
    """Providers for this instance from Triton's args and the config parameters."""
    available = ort.get_available_providers()
    kind = args.get("model_instance_kind", "CPU")
    cache_dir = serving.parameter(model_config, "TRT_CACHE_DIR", "")
    if cache_dir:
        cache_dir = os.path.join(cache_dir, args["model_name"], str(args["model_version"]))
        os.makedirs(cache_dir, exist_ok=True)
    trt_fp16 = serving.parameter(model_config, "TRT_FP16", "false").lower() == "true"
    providers = choose_providers(
        kind,
        int(args.get("model_instance_device_id", 0)),
        available,
        tensorrt=serving.parameter(model_config, "ENABLE_TENSORRT", "false").lower() == "true",
        fp16=precision == "fp16" or trt_fp16,
        cache_dir=cache_dir,
    )
    if kind == "GPU" and len(providers) == 1:
        log.log_warn(f"GPU instance but onnxruntime offers only {available}; using CPU")
    return providers


def _decode(value: bytes | str) -> str:
    """Texts arrive as bytes; undecodable bytes become U+FFFD instead of failing the batch."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class TritonPythonModel:
    """contracts/serving.py's recipe per dynamic batch: one tokenizer call, sorted chunks."""

    def initialize(self, args: dict) -> None:
        """Load one version's artifacts; the recipe's probe makes a broken version fail to load."""
        self.log = pb_utils.Logger
        model_config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        kind = args.get("model_instance_kind", "CPU")
        precision = serving.read_json(version_dir / serving.CLASSIFIER_FILE).get("precision")
        self.served = serving.ServedModel.load(
            version_dir,
            model_config,
            kind=kind,
            providers=_providers(args, model_config, self.log, precision or "fp32"),
        )
        labels = self.served.labels
        self.label_bytes = np.array([label.encode("utf-8") for label in labels], dtype=object)
        self.log.log_info(
            f"loaded {args['model_name']} version {args['model_version']}: labels={labels} "
            f"embedding_dim={self.served.embedding_dim} rows_per_run={self.served.rows_per_run} "
            f"providers={self.served.session.get_providers()} "
            f"intra_op_threads={self.served.threads} "
            f"hybrid_weight={self.served.hybrid.weight if self.served.hybrid else None}"
        )

    def _texts(self, request) -> list[str]:
        """The request's TEXT column, decoded; a wrong shape raises."""
        column = pb_utils.get_input_tensor_by_name(request, tensors.TEXT).as_numpy()
        decoded = [_decode(value) for value in column.reshape(-1)]
        if len(decoded) != column.shape[0]:
            raise ValueError(f"{tensors.TEXT} must have shape [batch, 1], got {list(column.shape)}")
        return decoded

    def execute(self, requests: list) -> list:
        """Classify every text of the dynamic batch at once, then answer each request."""
        responses = [None] * len(requests)
        texts = []
        spans = []
        wants_embedding = []
        for index, request in enumerate(requests):
            try:
                decoded = self._texts(request)
            except Exception as exc:
                message = f"bad {tensors.TEXT} input: {exc}"
                responses[index] = _error_response(message, "INVALID_ARG")
                continue
            spans.append((index, len(texts), len(texts) + len(decoded)))
            wants_embedding.append(tensors.EMBEDDING in request.requested_output_names())
            texts.extend(decoded)

        if texts:
            try:
                probs, embedding = self.served.run(texts, with_embedding=any(wants_embedding))
            except Exception as exc:
                message = f"inference failed: {exc}"
                for index, _start, _end in spans:
                    responses[index] = _error_response(message)
                return responses
            for (index, start, end), embed in zip(spans, wants_embedding, strict=True):
                responses[index] = self._response(probs, embedding if embed else None, start, end)
        return responses

    def _response(self, probs, embedding, start: int, end: int):
        """Rows start:end of the batch's outputs as one request's answer."""
        tensors_out = [
            pb_utils.Tensor(tensors.PROBS, np.ascontiguousarray(probs[start:end])),
            pb_utils.Tensor(tensors.LABELS, np.tile(self.label_bytes, (end - start, 1))),
        ]
        if embedding is not None:
            rows = np.ascontiguousarray(embedding[start:end])
            tensors_out.append(pb_utils.Tensor(tensors.EMBEDDING, rows))
        return pb_utils.InferenceResponse(output_tensors=tensors_out)

    def finalize(self) -> None:
        """Drop the session so its memory (and any GPU context) is released on unload."""
        self.served = None


def _error_response(message: str, code: str = "INTERNAL"):
    """A per-request failure; the other requests of the batch are still answered."""
    error = pb_utils.TritonError(message, getattr(pb_utils.TritonError, code))
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
