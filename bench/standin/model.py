"""`standin_news`: a Triton Python-backend model with news_topic's tensors and no network.

Used by bench/overhead.py (`make bench-overhead`) in place of the served MiniLM model so that
the worker, not the model, is the bottleneck: what a GPU doing the model's work would leave.

Same inputs/outputs as triton_models/model.py (see config.pbtxt):
  TEXT       TYPE_STRING [1]   one UTF-8 text per batch row
  PROBS      TYPE_FP32   [-1]  softmax-like scores over the labels of labels.json
  EMBEDDING  TYPE_FP32   [-1]  a vector of reference.json's embedding dim; only when requested
  LABELS     TYPE_STRING [-1]  label names, repeated per row

Each text picks one row of two fixed random tables (seeded) by the CRC-32 of its bytes, so
the answers are deterministic, differ between texts and cost a table lookup. The version
directory holds this file, labels.json and reference.json (copied from a trained news_topic
version by the bench, so the worker's drift path has a reference to compare with).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

ROWS = 256
SEED = 15


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        version_dir = Path(args["model_repository"]) / args["model_version"]
        labels = json.loads((version_dir / "labels.json").read_text(encoding="utf-8"))
        reference = json.loads((version_dir / "reference.json").read_text(encoding="utf-8"))
        dim = int(reference["embedding"]["dim"])
        rng = np.random.default_rng(SEED)
        logits = 2.0 * rng.standard_normal((ROWS, len(labels)))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
        self.embeddings = rng.standard_normal((ROWS, dim)).astype(np.float32)
        self.label_bytes = np.array([label.encode("utf-8") for label in labels], dtype=object)
        pb_utils.Logger.log_info(
            f"loaded {args['model_name']} version {args['model_version']} (stand-in): "
            f"labels={labels} embedding_dim={dim}"
        )

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                column = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                values = column.reshape(-1)
                if len(values) != column.shape[0]:
                    raise ValueError(f"TEXT must have shape [batch, 1], got {list(column.shape)}")
            except Exception as exc:
                error = pb_utils.TritonError(
                    f"bad TEXT input: {exc}", pb_utils.TritonError.INVALID_ARG
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            rows = np.fromiter(
                (zlib.crc32(v if isinstance(v, bytes) else str(v).encode()) % ROWS for v in values),
                dtype=np.int64,
                count=len(values),
            )
            tensors = [
                pb_utils.Tensor("PROBS", self.probs[rows]),
                pb_utils.Tensor("LABELS", np.tile(self.label_bytes, (len(rows), 1))),
            ]
            if "EMBEDDING" in request.requested_output_names():
                tensors.append(pb_utils.Tensor("EMBEDDING", self.embeddings[rows]))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
