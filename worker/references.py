"""Each served version's reference statistics (`reference.json`), as the drift code needs them.

The trainer writes `reference.json` next to every version in the model repository (format in
`trainer/reference.py`). The worker reads it from the same repository, read-only, once per
version; the projection matrix is regenerated from its seed and checked against its checksum.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

log = structlog.get_logger(__name__)

FORMAT = "labelstream.reference/1"
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class Reference:
    """The parts of reference.json a window is compared with."""

    model: str
    version: str
    labels: list[str]
    label_counts: np.ndarray
    confidence_edges: np.ndarray
    confidence_counts: np.ndarray
    confidence_mean: float
    length_edges: np.ndarray
    length_counts: np.ndarray
    length_mean: float
    projection: np.ndarray
    """[embedding dim, dims]: live embeddings are multiplied by this before sampling."""
    sample: np.ndarray
    bandwidth: float

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, dtype=np.float64) @ self.projection


def projection_matrix(seed: int, dim: int, dims: int) -> np.ndarray:
    """The Gaussian random projection named in reference.json (same recipe as the trainer)."""
    return np.random.default_rng(seed).standard_normal((dim, dims)) / np.sqrt(dims)


def parse_reference(model: str, version: str, stats: dict) -> Reference:
    """Check the format and build the arrays; a reference that cannot be used raises ValueError."""
    if stats.get("format") != FORMAT:
        raise ValueError(f"unsupported reference format {stats.get('format')!r}")
    embedding = stats["embedding"]
    spec = embedding["projection"]
    matrix = projection_matrix(int(spec["seed"]), int(embedding["dim"]), int(spec["dims"]))
    checksum = hashlib.sha256(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).hexdigest()
    if checksum != spec["matrix_sha256"]:
        raise ValueError("this numpy regenerates a different projection matrix than the trainer's")
    confidence, length = stats["confidence"], stats["text_length"]
    return Reference(
        model=model,
        version=version,
        labels=list(stats["labels"]),
        label_counts=np.asarray(stats["label_distribution"]["predicted"]["counts"], float),
        confidence_edges=np.asarray(confidence["edges"], float),
        confidence_counts=np.asarray(confidence["counts"], float),
        confidence_mean=float(confidence["mean"]),
        length_edges=np.asarray(length["edges"], float),
        length_counts=np.asarray(length["counts"], float),
        length_mean=float(length["mean"]),
        projection=matrix,
        sample=np.asarray(spec["sample"], dtype=np.float64).reshape(-1, int(spec["dims"])),
        bandwidth=float(spec["median_pairwise_distance"]),
    )


class ReferenceStore:
    """Loads `<repository>/<model>/<version>/reference.json` once per version.

    A version without a usable reference is remembered as None (and logged once): its windows
    are still counted and reported, with the status saying there is nothing to compare with.
    """

    def __init__(self, repository: Path) -> None:
        self.repository = Path(repository)
        self._cache: dict[tuple[str, str], Reference | None] = {}

    def get(self, model: str, version: str | None) -> Reference | None:
        if version is None:
            return None
        key = (model, version)
        if key not in self._cache:
            self._cache[key] = self._load(model, version)
        return self._cache[key]

    def _load(self, model: str, version: str) -> Reference | None:
        path = self.repository / model / version / REFERENCE_FILE
        try:
            reference = parse_reference(model, version, json.loads(path.read_text("utf-8")))
        except FileNotFoundError:
            log.warning("reference_missing", model=model, version=version, path=str(path))
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.error("reference_unusable", model=model, version=version, error=str(exc))
            return None
        log.info("reference_loaded", model=model, version=version, examples=len(reference.sample))
        return reference
