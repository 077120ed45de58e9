"""Reference statistics of a version's validation set, for drift detection in the worker.

What is computed here is written as `reference.json` in the version directory, so every
served version carries the baseline it should be compared with. The format, its bins and its
projection recipe are the contract in `contracts/reference.py`, which the worker reads with.
Pure numpy (no torch, no onnxruntime).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from contracts.reference import (
    CONFIDENCE_EDGES,
    FORMAT,
    LENGTH_EDGES,
    PROJECTION_DIMS,
    PROJECTION_METHOD,
    histogram,
    matrix_sha256,
    projection_matrix,
)

SAMPLE_SIZE = 512
SAMPLE_DECIMALS = 6


def _distribution(indices: np.ndarray, num_labels: int) -> dict[str, list]:
    counts = np.bincount(indices, minlength=num_labels)
    return {"counts": counts.tolist(), "fractions": (counts / max(len(indices), 1)).tolist()}


def _label_indices(values: Sequence[int] | np.ndarray, n: int, num_labels: int, what: str):
    indices = np.asarray(values).reshape(-1)
    if indices.size != n or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{what} must hold {n} integer label indices")
    if indices.size and (indices.min() < 0 or indices.max() >= num_labels):
        raise ValueError(f"{what} has label indices outside 0..{num_labels - 1}")
    return indices.astype(np.int64)


def _median_pairwise_distance(sample: np.ndarray) -> float:
    if len(sample) < 2:
        return 0.0
    squared = np.sum(sample**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * sample @ sample.T
    upper = np.triu_indices(len(sample), k=1)
    return float(np.median(np.sqrt(np.maximum(distances[upper], 0.0))))


def reference_statistics(
    predicted: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    texts: Sequence[str],
    embeddings: np.ndarray,
    labels: Sequence[str],
    seed: int,
    *,
    truth: Sequence[int] | np.ndarray | None = None,
    confidence_edges: Sequence[float] = CONFIDENCE_EDGES,
    projection_dims: int = PROJECTION_DIMS,
    sample_size: int = SAMPLE_SIZE,
) -> dict[str, Any]:
    """The JSON-serialisable statistics described in the module docstring.

    Computed from what the exported model produced on the validation set (not the torch
    model), so the worker compares like with like.
    """
    probs = np.asarray(probs, dtype=np.float64)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n, num_labels = len(texts), len(labels)
    if n == 0:
        raise ValueError("reference statistics need at least one example")
    if probs.shape != (n, num_labels):
        raise ValueError(f"probs must have shape ({n}, {num_labels}), got {probs.shape}")
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"embeddings must have shape ({n}, dim), got {embeddings.shape}")
    if not (np.isfinite(probs).all() and np.isfinite(embeddings).all()):
        raise ValueError("probs and embeddings must be finite")
    if projection_dims < 1 or sample_size < 1:
        raise ValueError("projection_dims and sample_size must be positive")
    predicted_idx = _label_indices(predicted, n, num_labels, "predicted")
    truth_idx = None if truth is None else _label_indices(truth, n, num_labels, "truth")

    lengths = np.array([len(text) for text in texts], dtype=np.float64)
    confidence = probs.max(axis=1)
    dim = embeddings.shape[1]
    matrix = projection_matrix(seed, dim, projection_dims)
    rows = np.arange(n)
    if n > sample_size:
        rows = np.sort(np.random.default_rng(seed + 1).choice(n, size=sample_size, replace=False))
    sample = np.round(embeddings[rows] @ matrix, SAMPLE_DECIMALS)

    return {
        "format": FORMAT,
        "examples": n,
        "labels": list(labels),
        "label_distribution": {
            "predicted": _distribution(predicted_idx, num_labels),
            "truth": None if truth_idx is None else _distribution(truth_idx, num_labels),
        },
        "confidence": {
            **histogram(confidence, confidence_edges),
            "mean": float(confidence.mean()),
        },
        "text_length": {
            "unit": "characters",
            **histogram(lengths, LENGTH_EDGES),
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
        },
        "embedding": {
            "dim": dim,
            "mean": embeddings.mean(axis=0).tolist(),
            "std": embeddings.std(axis=0).tolist(),
            "projection": {
                "method": PROJECTION_METHOD,
                "seed": int(seed),
                "dims": projection_dims,
                "matrix_sha256": matrix_sha256(matrix),
                "sample": sample.tolist(),
                "sample_size": len(rows),
                "median_pairwise_distance": _median_pairwise_distance(sample),
            },
        },
    }
