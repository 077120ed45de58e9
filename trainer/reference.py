"""Reference statistics of a version's validation set, for drift detection in the worker.

Written as `reference.json` in the version directory, so every served version carries the
baseline it should be compared with. Pure numpy and JSON (no torch, no onnxruntime): the worker
can import `histogram` and `projection_matrix` from here to bin and project a live window the
same way, or reimplement them from the format below.

Format (`format: "labelstream.reference/1"`; lists are plain JSON numbers):

  examples            rows the statistics were computed from
  labels              label names; every per-label list below is in this order
  label_distribution  {"predicted": {"counts", "fractions"}, "truth": same or null}
  confidence          histogram of max(probs) per row: {"edges", "counts", "fractions", "mean"}
  text_length         histogram of len(text) in characters (Python str length, code points),
                      plus "unit": "characters", "mean", "median"
  embedding           {"dim", "mean", "std", "projection"}, mean/std per embedding dimension
  embedding.projection
      method          "gaussian"
      seed, dims      the matrix is `projection_matrix(seed, dim, dims)`:
                      numpy.random.default_rng(seed).standard_normal((dim, dims)) / sqrt(dims),
                      float64; `matrix_sha256` (of its little-endian float64 bytes) lets a
                      reader check that its numpy regenerates the same matrix
      sample          up to `sample_size` rows of `embedding @ matrix` (rows drawn without
                      replacement by numpy.random.default_rng(seed + 1), in original order),
                      rounded to 6 decimals: the reference side of an MMD test
      sample_size     rows in `sample`
      median_pairwise_distance
                      median Euclidean distance between distinct sample rows (the usual RBF
                      bandwidth for that MMD test; 0.0 with fewer than two rows)

Histograms: `edges` has one more entry than `counts`; bin i holds edges[i] <= v < edges[i+1],
values below edges[0] count in the first bin and values at or above edges[-1] in the last, so
every row is counted and a live window binned with the same edges is directly comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "labelstream.reference/1"
REFERENCE_FILE = "reference.json"
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
LENGTH_EDGES: tuple[int, ...] = (0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
PROJECTION_DIMS = 32
SAMPLE_SIZE = 512
SAMPLE_DECIMALS = 6


def histogram(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> dict[str, Any]:
    """Counts and fractions over fixed `edges`; out-of-range values go to the end bins."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    if edges_arr.ndim != 1 or edges_arr.size < 2 or np.any(np.diff(edges_arr) <= 0):
        raise ValueError(f"edges must be strictly increasing with at least 2 entries: {edges}")
    values_arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bins = np.clip(np.searchsorted(edges_arr, values_arr, side="right") - 1, 0, edges_arr.size - 2)
    counts = np.bincount(bins, minlength=edges_arr.size - 1)
    total = max(int(counts.sum()), 1)
    return {
        "edges": list(edges),
        "counts": counts.tolist(),
        "fractions": (counts / total).tolist(),
    }


def projection_matrix(seed: int, dim: int, dims: int = PROJECTION_DIMS) -> np.ndarray:
    """The Gaussian random projection [dim, dims] that reference.json names by seed."""
    return np.random.default_rng(seed).standard_normal((dim, dims)) / np.sqrt(dims)


def matrix_sha256(matrix: np.ndarray) -> str:
    """Checksum of a projection matrix, so a reader can detect a different regeneration."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).hexdigest()


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
    length_edges: Sequence[float] = LENGTH_EDGES,
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
            **histogram(lengths, length_edges),
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
        },
        "embedding": {
            "dim": dim,
            "mean": embeddings.mean(axis=0).tolist(),
            "std": embeddings.std(axis=0).tolist(),
            "projection": {
                "method": "gaussian",
                "seed": int(seed),
                "dims": projection_dims,
                "matrix_sha256": matrix_sha256(matrix),
                "sample": sample.tolist(),
                "sample_size": len(rows),
                "median_pairwise_distance": _median_pairwise_distance(sample),
            },
        },
    }


def write_reference(version_dir: Path, stats: dict[str, Any]) -> Path:
    """Write `reference.json` atomically (temp file + rename); NaN is refused, not written."""
    path = Path(version_dir) / REFERENCE_FILE
    text = json.dumps(stats, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{REFERENCE_FILE}")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_reference(version_dir: Path) -> dict[str, Any]:
    """Load a version's `reference.json`, checking it is a format this code understands."""
    stats = json.loads((Path(version_dir) / REFERENCE_FILE).read_text(encoding="utf-8"))
    if stats.get("format") != FORMAT:
        raise ValueError(f"unsupported reference format {stats.get('format')!r}")
    return stats
