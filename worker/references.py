"""Each served version's reference statistics (`reference.json`), as the drift code needs them.

The trainer writes `reference.json` next to every version in the model repository; its format is
the contract in `contracts/reference.py`. The worker reads it from the same repository,
read-only, once per version, and refuses one the contract refuses (another format, other
text-length bins, a projection matrix this numpy regenerates differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from contracts.reference import REFERENCE_FILE, check_reference, read_reference

log = structlog.get_logger(__name__)


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


def parse_reference(model: str, version: str, stats: dict) -> Reference:
    """Check it against the contract and build the arrays; one that cannot be used raises
    ValueError (`contracts.reference.ReferenceError` when the contract refuses it)."""
    matrix = check_reference(stats)
    spec = stats["embedding"]["projection"]
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
            reference = parse_reference(model, version, read_reference(path.parent))
        except FileNotFoundError:
            log.warning("reference_missing", model=model, version=version, path=str(path))
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.error("reference_unusable", model=model, version=version, error=str(exc))
            return None
        log.info("reference_loaded", model=model, version=version, examples=len(reference.sample))
        return reference
