"""Triton Python-backend model that serves any classifier exported by `trainer`.

The trainer copies this file into every version directory next to `model.onnx`,
`tokenizer.json`, `labels.json` and `classifier.json`, so a version is self-contained and runs
unchanged in the official Triton container (which needs only `onnxruntime` or
`onnxruntime-gpu`, `tokenizers` and `numpy` in the stub's Python environment).

Inputs/outputs (see config.pbtxt):
  TEXT       TYPE_STRING [1]   one UTF-8 text per batch row (invalid bytes are replaced)
  PROBS      TYPE_FP32   [-1]  class probabilities, in LABELS order
  EMBEDDING  TYPE_FP32   [-1]  mean-pooled last hidden state; computed only when requested
  LABELS     TYPE_STRING [-1]  label names, repeated per row, so clients learn them per version

Config parameters (all optional, string values):
  INTRA_OP_THREADS  ONNX Runtime intra-op threads per instance; "0" or absent = the usable
                    cores shared out between the model's CPU instances (2 instances on 2 cores:
                    1 thread each). Spinning is off.
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
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

ONNX_PROBS = "probs"
ONNX_EMBEDDING = "embedding"


def _parameter(model_config: dict, key: str, default: str) -> str:
    """A string parameter from config.pbtxt `parameters`, or `default` when unset."""
    value = model_config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def _default_intra_op_threads(model_config: dict) -> int:
    """The usable cores (affinity/cpuset aware) divided between the model's CPU instances.

    Measured on 2 cores with Kafka and the worker beside Triton (bench/README.md): two
    single-threaded instances labelled 32 % more than one instance with two threads, whose
    threads wait for each other whenever a neighbour takes a core.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    instances = sum(
        int(group.get("count", 1))
        for group in model_config.get("instance_group", [])
        if group.get("kind", "KIND_CPU") == "KIND_CPU"
    )
    return max(1, cores // max(1, instances))


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
    cache_dir = _parameter(model_config, "TRT_CACHE_DIR", "")
    if cache_dir:
        cache_dir = os.path.join(cache_dir, args["model_name"], str(args["model_version"]))
        os.makedirs(cache_dir, exist_ok=True)
    providers = choose_providers(
        kind,
        int(args.get("model_instance_device_id", 0)),
        available,
        tensorrt=_parameter(model_config, "ENABLE_TENSORRT", "false").lower() == "true",
        fp16=precision == "fp16" or _parameter(model_config, "TRT_FP16", "false").lower() == "true",
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
    """Tokenize + ONNX Runtime classifier; one tokenizer call and one session run per batch."""

    def initialize(self, args: dict) -> None:
        """Load one version's artifacts and run a probe so a broken version fails to load."""
        self.log = pb_utils.Logger
        model_config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]

        classifier = json.loads((version_dir / "classifier.json").read_text(encoding="utf-8"))
        self.labels = json.loads((version_dir / "labels.json").read_text(encoding="utf-8"))
        self.label_bytes = np.array([label.encode("utf-8") for label in self.labels], dtype=object)
        max_length = int(classifier.get("max_length", 128))

        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()  # each length-sorted chunk is padded to its own longest
        pad_token = classifier.get("pad_token", "[PAD]")
        self.pad_id = int(classifier.get("pad_id", self.tokenizer.token_to_id(pad_token) or 0))
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        on_gpu = args.get("model_instance_kind") == "GPU"
        self.rows_per_run = int(_parameter(model_config, "ROWS_PER_RUN", "64" if on_gpu else "16"))

        options = ort.SessionOptions()
        threads = int(_parameter(model_config, "INTRA_OP_THREADS", "0"))
        options.intra_op_num_threads = (
            threads if threads > 0 else _default_intra_op_threads(model_config)
        )
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"),
            sess_options=options,
            providers=_providers(args, model_config, self.log, classifier.get("precision", "fp32")),
        )

        probs, embedding = self._run(["probe"], with_embedding=True)
        if probs.shape != (1, len(self.labels)):
            raise ValueError(
                f"model.onnx gives {probs.shape[1]} classes but labels.json has {len(self.labels)}"
            )
        self.log.log_info(
            f"loaded {args['model_name']} version {args['model_version']}: "
            f"labels={self.labels} max_length={max_length} embedding_dim={embedding.shape[1]} "
            f"providers={self.session.get_providers()} "
            f"intra_op_threads={options.intra_op_num_threads}"
        )

    def _run(self, texts: list[str], with_embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs in input order, computed in length-sorted chunks of `rows_per_run` texts."""
        ids = [encoding.ids for encoding in self._encode(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        names = [ONNX_PROBS, ONNX_EMBEDDING] if with_embedding else [ONNX_PROBS]
        results: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(order), self.rows_per_run):
            chunk = [ids[i] for i in order[start : start + self.rows_per_run]]
            input_ids, attention_mask = _pad(chunk, self.pad_id)
            outputs = self.session.run(
                names, {"input_ids": input_ids, "attention_mask": attention_mask}
            )
            for result, output in zip(results, outputs, strict=True):
                result.append(output)
        unsort = np.argsort(order)
        stacked = [np.concatenate(result)[unsort] for result in results]
        return stacked[0], (stacked[1] if with_embedding else None)

    def execute(self, requests: list) -> list:
        """Classify every text of the dynamic batch at once, then answer each request."""
        responses = [None] * len(requests)
        texts = []
        spans = []
        wants_embedding = []
        for index, request in enumerate(requests):
            try:
                column = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                decoded = [_decode(value) for value in column.reshape(-1)]
                if len(decoded) != column.shape[0]:
                    raise ValueError(f"TEXT must have shape [batch, 1], got {list(column.shape)}")
            except Exception as exc:
                responses[index] = _error_response(f"bad TEXT input: {exc}", "INVALID_ARG")
                continue
            spans.append((index, len(texts), len(texts) + len(decoded)))
            wants_embedding.append("EMBEDDING" in request.requested_output_names())
            texts.extend(decoded)

        if texts:
            try:
                probs, embedding = self._run(texts, with_embedding=any(wants_embedding))
            except Exception as exc:
                message = f"inference failed: {exc}"
                for index, _start, _end in spans:
                    responses[index] = _error_response(message)
                return responses
            for (index, start, end), embed in zip(spans, wants_embedding, strict=True):
                rows = end - start
                tensors = [
                    pb_utils.Tensor("PROBS", np.ascontiguousarray(probs[start:end])),
                    pb_utils.Tensor("LABELS", np.tile(self.label_bytes, (rows, 1))),
                ]
                if embed:
                    tensors.append(
                        pb_utils.Tensor("EMBEDDING", np.ascontiguousarray(embedding[start:end]))
                    )
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self) -> None:
        """Drop the session so its memory (and any GPU context) is released on unload."""
        self.session = None


def _pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask of rows padded to the longest row."""
    width = max(len(row) for row in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def _error_response(message: str, code: str = "INTERNAL"):
    """A per-request failure; the other requests of the batch are still answered."""
    error = pb_utils.TritonError(message, getattr(pb_utils.TritonError, code))
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
