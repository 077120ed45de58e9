"""INT8/FP16 variants of an exported classifier and their side-by-side comparison (tiny model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.unit.tiny_model import LABELS, MAX_LENGTH, TEXTS, shared_version
from trainer import quantize
from trainer.metrics import classification_scores
from trainer.onnx_runner import OnnxClassifier


@pytest.fixture(scope="session")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_version(tmp_path_factory)


@pytest.fixture(scope="session")
def variants(version_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("variants")
    return {
        "fp32": version_dir / "model.onnx",
        "int8": quantize.quantize_int8(version_dir / "model.onnx", out / "int8.onnx"),
        "fp16": quantize.convert_fp16(version_dir / "model.onnx", out / "fp16.onnx"),
    }


def run(version_dir: Path, onnx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    probs, embedding = OnnxClassifier.from_version_dir(version_dir, str(onnx_path)).predict(TEXTS)
    assert embedding is not None
    return probs, embedding


def io_types(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    graph = onnx.load(str(path)).graph
    return (
        {i.name: i.type.tensor_type.elem_type for i in graph.input},
        {o.name: o.type.tensor_type.elem_type for o in graph.output},
    )


def test_int8_is_smaller_and_close(version_dir: Path, variants: dict[str, Path]) -> None:
    assert variants["int8"].stat().st_size < 0.7 * variants["fp32"].stat().st_size
    assert quantize.detect_precision(variants["int8"]) == "int8"
    assert quantize.detect_precision(variants["fp32"]) == "fp32"
    probs, embedding = run(version_dir, variants["int8"])
    ref_probs, ref_embedding = run(version_dir, variants["fp32"])
    assert probs.shape == ref_probs.shape == (len(TEXTS), len(LABELS))
    assert np.abs(probs - ref_probs).max() < 0.02
    assert np.abs(embedding - ref_embedding).max() < 0.05 * np.abs(ref_embedding).max()


def test_fp16_keeps_io_types(version_dir: Path, variants: dict[str, Path]) -> None:
    assert io_types(variants["fp16"]) == io_types(variants["fp32"])
    inputs, outputs = io_types(variants["fp16"])
    assert inputs == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.INT64}
    assert outputs == {"probs": onnx.TensorProto.FLOAT, "embedding": onnx.TensorProto.FLOAT}
    assert quantize.detect_precision(variants["fp16"]) == "fp16"
    probs, embedding = run(version_dir, variants["fp16"])
    ref_probs, _ = run(version_dir, variants["fp32"])
    assert probs.dtype == embedding.dtype == np.float32
    assert np.abs(probs - ref_probs).max() < 1e-2


def test_compare_variants_measures_all_side_by_side(
    version_dir: Path, variants: dict[str, Path]
) -> None:
    truth = [0] * 9 + [1] * 3
    result = quantize.compare_variants(
        variants,
        (version_dir / "tokenizer.json").read_text(),
        MAX_LENGTH,
        TEXTS,
        truth,
        batch_size=5,
        repeats=2,
        threads=1,
    )
    assert list(result) == ["fp32", "int8", "fp16"]
    fp32, int8, fp16 = result["fp32"], result["int8"], result["fp16"]
    expected = classification_scores(truth, run(version_dir, variants["fp32"])[0].argmax(1), 2)
    assert (fp32["accuracy"], fp32["macro_f1"]) == pytest.approx(
        (expected["accuracy"], expected["macro_f1"])
    )
    assert fp32["max_prob_diff_vs_first"] == 0.0 and fp32["accuracy_delta"] == 0.0
    assert fp32["speedup_vs_first"] == 1.0 and fp32["agreement_vs_first"] == 1.0
    assert [e["precision"] for e in result.values()] == ["fp32", "int8", "fp16"]
    assert 0 < int8["max_prob_diff_vs_first"] < 0.02 and int8["size_ratio_vs_first"] < 0.7
    assert fp16["max_prob_diff_vs_first"] < 1e-2 and fp16["agreement_vs_first"] == 1.0
    assert int8["size_bytes"] == variants["int8"].stat().st_size
    assert [e["cpu_only_measurement"] for e in result.values()] == [False, False, True]
    for entry in result.values():
        assert entry["texts_per_s"] > 0 and entry["threads"] == 1 and entry["texts"] == 12
        assert entry["providers"] == ["CPUExecutionProvider"]
    json.dumps(result, allow_nan=False)


def test_install_variant_serves_int8_and_keeps_fp32(version_dir: Path, tmp_path: Path) -> None:
    staging = shutil.copytree(version_dir, tmp_path / "staging")
    original = (staging / "model.onnx").read_bytes()
    files = quantize.install_variant(staging, "int8")
    assert files == {"fp32": staging / "model.fp32.onnx", "int8": staging / "model.onnx"}
    assert (staging / "model.fp32.onnx").read_bytes() == original
    assert quantize.detect_precision(staging / "model.onnx") == "int8"
    assert not [p.name for p in staging.iterdir() if p.name.startswith(".")]
    served = OnnxClassifier.from_version_dir(staging)
    assert served.labels == list(LABELS)
    assert served.predict(TEXTS[:2])[0].shape == (2, 2)


def test_failed_variant_leaves_the_export_untouched(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = shutil.copytree(version_dir, tmp_path / "staging")
    before = sorted(p.name for p in staging.iterdir())

    def broken(src: Path, dst: Path) -> Path:
        Path(dst).write_bytes(b"half written")
        raise quantize.VariantError("conversion failed")

    monkeypatch.setattr(quantize, "convert_fp16", broken)
    with pytest.raises(quantize.VariantError):
        quantize.install_variant(staging, "fp16")
    assert sorted(p.name for p in staging.iterdir()) == before
    assert quantize.install_variant(staging, "fp32") == {"fp32": staging / "model.onnx"}
    with pytest.raises(ValueError, match="precision"):
        quantize.install_variant(staging, "int4")  # type: ignore[arg-type]
