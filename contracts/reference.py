"""The `reference.json` format: a version's validation-set statistics, for drift detection.

The trainer writes it next to every version (`trainer/reference.py` computes the statistics);
the worker reads it (`worker/references.py`) and bins its live windows with the same edges and
projects them with the same matrix (`worker/window.py`). Both sides import this module, and a
reader refuses a file it would misread instead of skipping a comparison.

Format (`format: "labelstream.reference/1"`; lists are plain JSON numbers):

  examples            rows the statistics were computed from
  labels              label names; every per-label list below is in this order
  label_distribution  {"predicted": {"counts", "fractions"}, "truth": same or null}
  confidence          histogram of max(probs) per row: {"edges", "counts", "fractions", "mean"}
  text_length         histogram of len(text) in characters (Python str length, code points)
                      over exactly LENGTH_EDGES, plus "unit": "characters", "mean", "median"
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

Histograms (`bin_counts`): `edges` has one more entry than `counts`; bin i holds
edges[i] <= v < edges[i+1], values below edges[0] count in the first bin and values at or above
edges[-1] in the last, so every row is counted and a live window binned with the same edges is
directly comparable.
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
"""Text-length bins in characters, the same for every reference and every live window."""
PROJECTION_METHOD = "gaussian"
PROJECTION_DIMS = 32


class ReferenceError(ValueError):
    """A reference.json this code would misread: refused, never compared with."""


def bin_counts(
    values: Sequence[float] | np.ndarray,
    edges: Sequence[float],
    weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Counts (or summed `weights`) over fixed edges; out-of-range values go to the end bins."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    values_arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bins = np.clip(np.searchsorted(edges_arr, values_arr, side="right") - 1, 0, edges_arr.size - 2)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    return np.bincount(bins, weights=weights, minlength=edges_arr.size - 1)


def histogram(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> dict[str, Any]:
    """`{"edges", "counts", "fractions"}` of `values` over `edges` (see `bin_counts`)."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    if edges_arr.ndim != 1 or edges_arr.size < 2 or np.any(np.diff(edges_arr) <= 0):
        raise ValueError(f"edges must be strictly increasing with at least 2 entries: {edges}")
    counts = bin_counts(values, edges_arr)
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
    """Checksum of a projection matrix: another numpy's regeneration may differ."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).hexdigest()


def check_reference(stats: dict[str, Any]) -> np.ndarray:
    """Refuse a reference this code would misread; return its projection matrix.

    Refused: another format, text-length edges other than LENGTH_EDGES (the live window's
    counts could not be compared with its counts), another projection method, and a matrix
    this numpy regenerates differently from the trainer's.
    """
    if stats.get("format") != FORMAT:
        raise ReferenceError(f"unsupported reference format {stats.get('format')!r}")
    edges = stats["text_length"]["edges"]
    if [float(edge) for edge in edges] != [float(edge) for edge in LENGTH_EDGES]:
        raise ReferenceError(
            f"reference.json bins text length at {edges}, this code at {list(LENGTH_EDGES)}"
        )
    embedding = stats["embedding"]
    spec = embedding["projection"]
    if spec.get("method") != PROJECTION_METHOD:
        raise ReferenceError(f"unsupported projection method {spec.get('method')!r}")
    matrix = projection_matrix(int(spec["seed"]), int(embedding["dim"]), int(spec["dims"]))
    if matrix_sha256(matrix) != spec["matrix_sha256"]:
        raise ReferenceError(
            "this numpy regenerates a different projection matrix than the trainer's"
        )
    return matrix


def write_reference(version_dir: Path, stats: dict[str, Any]) -> Path:
    """Write `reference.json` atomically (temp file + rename); what a reader would refuse, or
    NaN, is not written."""
    check_reference(stats)
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
    """A version's `reference.json`, once `check_reference` accepts it."""
    stats = json.loads((Path(version_dir) / REFERENCE_FILE).read_text(encoding="utf-8"))
    check_reference(stats)
    return stats
