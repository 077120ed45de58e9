"""Smaller/faster variants of an exported classifier, and a side-by-side measurement of them.

Variants:
  int8  dynamic quantization for CPU serving (`--quantize int8`): MatMul weights become
        per-channel QInt8, activations are quantized on the fly (the exporter writes nn.Linear
        as MatMul + Add, and ORT's dynamic registry has no Gemm). The embedding tables (Gather)
        stay fp32 by default: on 400 news texts quantizing them too shrank the file to 25%
        instead of 65% but dropped accuracy 0.8825 -> 0.875; MatMul alone kept 0.8825.
  fp16  half-precision weights for GPU serving (`--precision fp16`), with `keep_io_types` so the
        graph still takes int64 `input_ids`/`attention_mask` and returns fp32 `probs`/`embedding`
        (the Triton config and model.py need no change). ONNX Runtime's CPU provider has few
        fp16 kernels and casts around the rest, so a CPU speed number for fp16 says nothing
        about a GPU: entries measured that way carry `cpu_only_measurement: true`.

Version-directory layout (`install_variant`): Triton and `triton_models/model.py` always serve
`model.onnx`, whatever its precision, so model.py stays unchanged and a version remains one
self-contained directory. With a variant, `model.onnx` *is* the variant and the original export
is kept beside it as `model.fp32.onnx` (for `trainer evaluate --onnx-file model.fp32.onnx` and to
re-derive variants later); Triton ignores the extra file. The trainer records the served
precision as `classifier.json["precision"]` and the comparison in `metrics.json["variants"]`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import structlog

from contracts.serving import CPU_PROVIDERS, DEFAULT_PAD_TOKEN, SERVED_ONNX, usable_cores
from contracts.tensors import ONNX_ATTENTION_MASK, ONNX_EMBEDDING, ONNX_INPUT_IDS, ONNX_PROBS
from trainer.metrics import classification_scores
from trainer.onnx_runner import OnnxClassifier

log = structlog.get_logger(__name__)

Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")
FP32_ONNX = "model.fp32.onnx"
INT8_OP_TYPES: tuple[str, ...] = ("MatMul",)
GPU_PROVIDER_PREFIXES = ("CUDA", "Tensorrt", "ROCM", "Migraphx", "Dml")


class VariantError(RuntimeError):
    """A variant could not be built or no longer has the interface model.py relies on."""


def _check_interface(path: Path) -> None:
    """The variant must keep int64 inputs and fp32 `probs`/`embedding` outputs, by name."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    outputs = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    int64, fp32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    if (inputs.get(ONNX_INPUT_IDS), inputs.get(ONNX_ATTENTION_MASK)) != (int64, int64) or (
        outputs.get(ONNX_PROBS),
        outputs.get(ONNX_EMBEDDING),
    ) != (fp32, fp32):
        raise VariantError(f"{path}: interface changed: inputs={inputs} outputs={outputs}")


def _written(event: str, src: Path, dst: Path, started: float) -> Path:
    """Check the variant kept the serving interface, log its size, return its path."""
    _check_interface(dst)
    log.info(
        event,
        src=str(src),
        dst=str(dst),
        src_bytes=src.stat().st_size,
        dst_bytes=dst.stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
    )
    return dst


def quantize_int8(
    src: Path,
    dst: Path,
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = INT8_OP_TYPES,
) -> Path:
    """Dynamic INT8 quantization of `src` into `dst`; returns `dst`.

    Per-channel weights by default: on 400 news texts per-tensor scales dropped accuracy
    0.8825 -> 0.8725 and moved probabilities twice as far (0.12 vs 0.065), for no speed gain.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    quantize_dynamic(
        Path(src),
        Path(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        op_types_to_quantize=list(op_types),
    )
    return _written("quantize.int8_written", Path(src), Path(dst), started)


def convert_fp16(src: Path, dst: Path) -> Path:
    """FP16 weights and compute, fp32/int64 graph inputs and outputs; returns `dst`."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started = time.perf_counter()
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return _written("quantize.fp16_written", Path(src), Path(dst), started)


def install_variant(version_dir: Path, precision: Precision) -> dict[str, Path]:
    """Make `model.onnx` in `version_dir` the `precision` variant, keeping the fp32 export.

    Call it on the staging directory inside `write_version`'s build step, after the fp32 export
    passed its parity check. Returns the files to hand to `compare_variants`, fp32 first so
    every difference is measured against the original. The variant is written under a temp name
    first, so a failed conversion leaves `model.onnx` untouched.
    """
    version_dir = Path(version_dir)
    served = version_dir / SERVED_ONNX
    if precision == "fp32":
        return {"fp32": served}
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    pending = version_dir / f".{precision}-{SERVED_ONNX}"
    try:
        if precision == "int8":
            quantize_int8(served, pending)
        else:
            convert_fp16(served, pending)
        os.replace(served, version_dir / FP32_ONNX)
        os.replace(pending, served)
    finally:
        pending.unlink(missing_ok=True)
    return {"fp32": version_dir / FP32_ONNX, precision: served}


def detect_precision(path: Path) -> str:
    """The precision a graph really has (int8, fp16 or fp32), from its stored weight types."""
    graph = onnx.load(str(path), load_external_data=False).graph
    types = {initializer.data_type for initializer in graph.initializer}
    if types & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}:
        return "int8"
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    return "fp32"


def _on_gpu(providers: Sequence[str]) -> bool:
    return bool(providers) and providers[0].startswith(GPU_PROVIDER_PREFIXES)


def _interleaved_runs(
    runners: Mapping[str, OnnxClassifier], texts: Sequence[str], batch_size: int, repeats: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[float]]]:
    """Outputs of each variant and its seconds per pass. After one warm-up batch each, the
    passes are interleaved (the order rotates every repeat) so a neighbour's load on a shared
    machine hits every variant alike instead of whichever ran last."""
    for runner in runners.values():
        runner.predict(texts[:batch_size], batch_size)
    names = list(runners)
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(max(1, repeats)):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            probs, embedding = runners[name].predict(texts, batch_size)
            seconds[name].append(time.perf_counter() - started)
            outputs.setdefault(name, (probs, embedding))
    return {name: outputs[name] for name in names}, seconds


def _add_relative_to_first(results: dict[str, dict[str, Any]]) -> None:
    """Deltas and ratios against the first variant (normally fp32), which gets 0 and 1."""
    base = next(iter(results.values()))
    for entry in results.values():
        entry["accuracy_delta"] = round(entry["accuracy"] - base["accuracy"], 6)
        entry["macro_f1_delta"] = round(entry["macro_f1"] - base["macro_f1"], 6)
        entry["speedup_vs_first"] = round(entry["texts_per_s"] / base["texts_per_s"], 3)
        entry["size_ratio_vs_first"] = round(entry["size_bytes"] / base["size_bytes"], 4)


def compare_variants(
    variants: Mapping[str, Path],
    tokenizer_json: str,
    max_length: int,
    texts: Sequence[str],
    labels_true: Sequence[int],
    providers: Sequence[str | tuple[str, dict]] = CPU_PROVIDERS,
    *,
    num_labels: int | None = None,
    batch_size: int = 32,
    repeats: int = 3,
    threads: int | None = None,
    pad_token: str = DEFAULT_PAD_TOKEN,
    pad_id: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy, agreement and throughput of every variant on the same texts, in one run.

    All sessions use the same threads and batches. Timing passes are interleaved (the variant
    order rotates every repeat) and the median pass counts, so load from a neighbour on a shared
    machine hits every variant alike instead of whichever ran last. Differences (`*_vs_first`,
    `*_delta`) are against the first variant, normally fp32. Per variant:

      precision, accuracy, macro_f1, accuracy_delta, macro_f1_delta, agreement_vs_first
      (share of identical argmax), max_prob_diff_vs_first, max_embedding_diff_vs_first,
      texts_per_s, speedup_vs_first, size_bytes, size_ratio_vs_first, providers,
      cpu_only_measurement (fp16 timed on CPU only: speed not representative), texts, threads,
      batch_size, repeats.
    """
    if not variants:
        raise ValueError("compare_variants needs at least one variant")
    if not texts or len(texts) != len(labels_true):
        raise ValueError("texts and labels_true must be non-empty and of equal length")
    threads = threads if threads and threads > 0 else usable_cores()
    runners = {
        name: OnnxClassifier.from_files(
            Path(path),
            tokenizer_json,
            max_length,
            pad_token=pad_token,
            pad_id=pad_id,
            providers=providers,
            threads=threads,
        )
        for name, path in variants.items()
    }
    outputs, seconds = _interleaved_runs(runners, texts, batch_size, repeats)
    first_probs, first_embedding = next(iter(outputs.values()))
    num_labels = num_labels or first_probs.shape[1]
    run = {"texts": len(texts), "threads": threads, "batch_size": batch_size}
    results: dict[str, dict[str, Any]] = {}
    for name, (probs, embedding) in outputs.items():
        path, session_providers = Path(variants[name]), runners[name].providers
        precision = detect_precision(path)
        results[name] = {
            "precision": precision,
            **classification_scores(labels_true, probs.argmax(axis=1), num_labels),
            "agreement_vs_first": float(np.mean(probs.argmax(1) == first_probs.argmax(1))),
            "max_prob_diff_vs_first": float(np.abs(probs - first_probs).max()),
            "max_embedding_diff_vs_first": float(np.abs(embedding - first_embedding).max()),
            "texts_per_s": round(len(texts) / statistics.median(seconds[name]), 2),
            "size_bytes": path.stat().st_size,
            "providers": session_providers,
            "cpu_only_measurement": precision == "fp16" and not _on_gpu(session_providers),
            **run,
            "repeats": max(1, repeats),
        }
    _add_relative_to_first(results)
    log.info(
        "quantize.compared",
        **{
            name: {k: entry[k] for k in ("accuracy", "texts_per_s", "max_prob_diff_vs_first")}
            for name, entry in results.items()
        },
    )
    return results
