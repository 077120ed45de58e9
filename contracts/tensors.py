"""Tensor names: the served model's Triton interface and the exported ONNX graph's.

Copied into every version directory with `serving.py` (see `contracts/__init__.py`), so it
imports nothing. The config.pbtxt files spell the Triton names too; a unit test keeps them equal.
"""

from __future__ import annotations

TEXT = "TEXT"
"""Input: TYPE_STRING [1], one UTF-8 text per batch row."""
PROBS = "PROBS"
"""Output: TYPE_FP32 [-1], class probabilities in LABELS order."""
LABELS = "LABELS"
"""Output: TYPE_STRING [-1], the label names, repeated per row."""
EMBEDDING = "EMBEDDING"
"""Output: TYPE_FP32 [-1], the mean-pooled last hidden state; computed only when requested."""

TRITON_INPUTS: tuple[str, ...] = (TEXT,)
TRITON_OUTPUTS: tuple[str, ...] = (PROBS, EMBEDDING, LABELS)

ONNX_INPUT_IDS = "input_ids"
ONNX_ATTENTION_MASK = "attention_mask"
ONNX_PROBS = "probs"
ONNX_EMBEDDING = "embedding"
ONNX_INPUTS: tuple[str, ...] = (ONNX_INPUT_IDS, ONNX_ATTENTION_MASK)
ONNX_OUTPUTS: tuple[str, ...] = (ONNX_PROBS, ONNX_EMBEDDING)
