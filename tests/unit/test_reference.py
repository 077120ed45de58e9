"""reference.json: the trainer's statistics on inputs small enough to check by hand, and the
contract (bins, projection, read/write) both sides use."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from contracts import reference as contract
from trainer import reference as ref

LABELS = ["negative", "positive"]
PROBS = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5], [0.2, 0.8]])
PREDICTED = [0, 1, 0, 1]
TEXTS = ["abc", "x" * 16, "é" * 40, "y" * 5000]
EMBEDDINGS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])


def stats(**overrides) -> dict:
    arguments = {
        "predicted": PREDICTED,
        "probs": PROBS,
        "texts": TEXTS,
        "embeddings": EMBEDDINGS,
        "labels": LABELS,
        "seed": 7,
        "truth": [0, 0, 1, 1],
        "projection_dims": 3,
    }
    return ref.reference_statistics(**{**arguments, **overrides})


def test_histogram_counts_every_value_in_fixed_bins() -> None:
    result = contract.histogram([0.0, 0.25, 0.5, 0.99, 1.0, -1.0, 2.0], [0.0, 0.5, 1.0])
    assert result == {
        "edges": [0.0, 0.5, 1.0],
        "counts": [3, 4],
        "fractions": [3 / 7, 4 / 7],
    }
    with pytest.raises(ValueError, match="increasing"):
        contract.histogram([1.0], [0.0, 0.0, 1.0])


def test_bin_counts_put_out_of_range_values_in_end_bins() -> None:
    assert contract.bin_counts([-5, 0, 0.5, 1, 9], [0, 1, 2]).tolist() == [3, 2]


def test_label_distributions_of_predictions_and_truth() -> None:
    result = stats()
    assert result["format"] == "labelstream.reference/1"
    assert result["examples"] == 4 and result["labels"] == LABELS
    assert result["label_distribution"] == {
        "predicted": {"counts": [2, 2], "fractions": [0.5, 0.5]},
        "truth": {"counts": [2, 2], "fractions": [0.5, 0.5]},
    }
    skewed = stats(predicted=[1, 1, 1, 0], truth=None)["label_distribution"]
    assert skewed == {"predicted": {"counts": [1, 3], "fractions": [0.25, 0.75]}, "truth": None}


def test_confidence_histogram_uses_max_probability() -> None:
    confidence = stats()["confidence"]
    assert confidence["edges"] == [round(i * 0.05, 2) for i in range(21)]
    assert len(confidence["counts"]) == 20
    # max probs 0.9, 0.7, 0.5, 0.8 -> bins [0.9, 0.95), [0.7, 0.75), [0.5, 0.55), [0.8, 0.85)
    assert {i: c for i, c in enumerate(confidence["counts"]) if c} == {10: 1, 14: 1, 16: 1, 18: 1}
    assert confidence["mean"] == pytest.approx(0.725)


def test_text_length_histogram_counts_characters() -> None:
    lengths = stats()["text_length"]
    assert lengths["unit"] == "characters"
    assert lengths["edges"] == list(contract.LENGTH_EDGES)
    # 3 -> [0, 16), 16 -> [16, 32), 40 code points (80 UTF-8 bytes) -> [32, 64), 5000 -> last
    assert {i: c for i, c in enumerate(lengths["counts"]) if c} == {0: 1, 1: 1, 2: 1, 12: 1}
    assert lengths["mean"] == pytest.approx((3 + 16 + 40 + 5000) / 4)
    assert lengths["median"] == 28.0


def test_embedding_mean_std_and_projection() -> None:
    embedding = stats()["embedding"]
    assert embedding["dim"] == 2
    assert embedding["mean"] == [1.0, 1.0]
    assert embedding["std"] == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])
    projection = embedding["projection"]
    matrix = contract.projection_matrix(7, 2, 3)
    assert matrix.shape == (2, 3)
    assert projection["seed"] == 7 and projection["dims"] == 3
    assert projection["matrix_sha256"] == contract.matrix_sha256(matrix)
    assert projection["sample_size"] == 4
    np.testing.assert_allclose(projection["sample"], EMBEDDINGS @ matrix, atol=1e-6)
    sample = np.array(projection["sample"])
    distances = [np.linalg.norm(sample[i] - sample[j]) for i in range(4) for j in range(i + 1, 4)]
    assert projection["median_pairwise_distance"] == pytest.approx(np.median(distances))


def test_sample_is_capped_deterministic_and_in_original_order() -> None:
    rng = np.random.default_rng(0)
    n = 50
    embeddings = rng.normal(size=(n, 6))
    probs = np.full((n, 2), 0.5)
    common = {
        "predicted": [0] * n,
        "probs": probs,
        "texts": ["t"] * n,
        "embeddings": embeddings,
        "projection_dims": 4,
        "sample_size": 8,
        "truth": None,
    }
    first = stats(**common)["embedding"]["projection"]
    again = stats(**common)["embedding"]["projection"]
    other = stats(**common, seed=8)["embedding"]["projection"]
    assert first == again and first["sample_size"] == 8
    assert other["matrix_sha256"] != first["matrix_sha256"]
    projected = np.round(embeddings @ contract.projection_matrix(7, 6, 4), 6)
    rows = [int(np.flatnonzero((projected == row).all(axis=1))[0]) for row in first["sample"]]
    assert rows == sorted(rows) and len(set(rows)) == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"probs": PROBS[:3]}, "probs"),
        ({"embeddings": EMBEDDINGS[:, 0]}, "embeddings"),
        ({"predicted": [0, 1, 2, 0]}, "outside"),
        ({"truth": [0, 1]}, "truth"),
        ({"embeddings": np.full((4, 2), np.nan)}, "finite"),
        ({"texts": [], "probs": np.zeros((0, 2))}, "at least one"),
    ],
)
def test_bad_inputs_are_refused(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats(**override)


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    result = stats()
    path = contract.write_reference(tmp_path, result)
    assert path == tmp_path / "reference.json"
    assert json.loads(path.read_text()) == result
    assert contract.read_reference(tmp_path) == result
    assert [p.name for p in tmp_path.iterdir()] == ["reference.json"]
    with pytest.raises(ValueError):
        contract.write_reference(tmp_path, {**result, "examples": float("nan")})
    assert [p.name for p in tmp_path.iterdir()] == ["reference.json"]
    path.write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ValueError, match="unsupported"):
        contract.read_reference(tmp_path)


def test_a_reference_readers_would_refuse_is_not_written(tmp_path: Path) -> None:
    result = stats()
    result["text_length"]["edges"] = [0, 1]
    with pytest.raises(contract.ReferenceError, match="text length"):
        contract.write_reference(tmp_path, result)
    assert list(tmp_path.iterdir()) == []
