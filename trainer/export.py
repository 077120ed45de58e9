"""ONNX export of a fine-tuned classifier plus a parity check against torch.

The exported graph takes `input_ids` and `attention_mask` (int64, dynamic batch and sequence
axes) and returns `probs` (softmax over the labels) and `embedding` (mean of the last hidden
state over real tokens): what the serving recipe (`contracts/serving.py`) feeds and reads, under
the names in `contracts/tensors.py`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog
import torch
from tokenizers import Tokenizer
from torch import nn

from contracts import serving
from contracts.tensors import (
    ONNX_ATTENTION_MASK,
    ONNX_EMBEDDING,
    ONNX_INPUT_IDS,
    ONNX_INPUTS,
    ONNX_OUTPUTS,
    ONNX_PROBS,
)
from trainer.settings import force_offline_hub

log = structlog.get_logger(__name__)

INPUT_NAMES = ONNX_INPUTS  # recorded in classifier.json by trainer.train
OUTPUT_NAMES = ONNX_OUTPUTS
OPSET = 17
PARITY_TOLERANCE = 1e-3
PAD_TOKEN = serving.DEFAULT_PAD_TOKEN


class ExportError(RuntimeError):
    """The exported ONNX graph cannot be trusted to behave like the torch model."""


class ClassifierWithEmbedding(nn.Module):
    """Wraps an `AutoModelForSequenceClassification` to return (probs, mean-pooled embedding).

    Softmax and pooling live in the graph so the server does no numeric work of its own.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        hidden = out.hidden_states[-1]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        embedding = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.softmax(out.logits, dim=-1), embedding


def base_tokenizer_json(base_model: Path) -> str:
    """The base model's fast-tokenizer JSON without baked-in padding/truncation.

    model.py (and training) set those from classifier.json, so the file must not fight them.
    Checkpoints without a tokenizer.json get one converted by transformers, offline.
    """
    path = Path(base_model) / "tokenizer.json"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        force_offline_hub()
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
        text = hf_tokenizer.backend_tokenizer.to_str()
    data = json.loads(text)
    data["padding"] = None
    data["truncation"] = None
    return json.dumps(data, ensure_ascii=False)


def serving_tokenizer(
    tokenizer_json: str, max_length: int, pad_token: str = PAD_TOKEN
) -> Tokenizer:
    """The serving tokenizer (contracts/serving.py) that also pads a whole batch to its longest
    row with the served pad id: for training batches, tracing and the one-batch parity check.

    Same truncation and ids as serving, so training and serving tokenization are identical.
    """
    tokenizer = serving.serving_tokenizer(tokenizer_json, max_length)
    tokenizer.enable_padding(pad_id=serving.pad_id(tokenizer, pad_token), pad_token=pad_token)
    return tokenizer


def _export(wrapper: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> str:
    """Classic TorchScript exporter first (needs no onnxscript); dynamo exporter otherwise."""
    batch, seq = "batch", "sequence"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                dynamo=False,
                input_names=list(ONNX_INPUTS),
                output_names=list(ONNX_OUTPUTS),
                dynamic_axes={
                    ONNX_INPUT_IDS: {0: batch, 1: seq},
                    ONNX_ATTENTION_MASK: {0: batch, 1: seq},
                    ONNX_PROBS: {0: batch},
                    ONNX_EMBEDDING: {0: batch},
                },
                opset_version=OPSET,
                do_constant_folding=True,
            )
        return "torchscript"
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        log.warning("export.classic_unavailable", error=str(exc))
    dim = torch.export.Dim
    shapes = {
        ONNX_INPUT_IDS: {0: dim("batch", min=1, max=1024), 1: dim("sequence", min=2, max=4096)},
        ONNX_ATTENTION_MASK: {
            0: dim("batch", min=1, max=1024),
            1: dim("sequence", min=2, max=4096),
        },
    }
    program = torch.onnx.export(
        wrapper,
        example,
        dynamo=True,
        input_names=list(ONNX_INPUTS),
        output_names=list(ONNX_OUTPUTS),
        dynamic_shapes=shapes,
        opset_version=OPSET,
        external_data=False,
    )
    program.save(str(path), external_data=False)
    return "dynamo"


def export_onnx(model: nn.Module, tokenizer: Tokenizer, path: Path) -> Path:
    """Export `model` to `path` with dynamic batch and sequence axes; returns `path`.

    The example batch has two rows of different lengths so padding is traced, not a constant.
    """
    wrapper = ClassifierWithEmbedding(model).eval()
    encodings = tokenizer.encode_batch(["an example sentence for tracing", "short"])
    example = (
        torch.tensor([e.ids for e in encodings], dtype=torch.int64),
        torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
    )
    with torch.no_grad():
        exporter = _export(wrapper, example, path)
    # The classic exporter restores the wrapper's previous training flag recursively; make sure
    # no caller continues with dropout switched on.
    wrapper.eval()
    log.info("export.onnx_written", path=str(path), exporter=exporter, bytes=path.stat().st_size)
    return path


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Max |probs_onnx - probs_torch| over `texts` in one padded batch; raises above tolerance.

    Runs ONNX Runtime on the same tokens as serving, in one padded batch, so a graph
    that baked in a traced shape or lost the padding mask is caught before it is published.
    """
    if not texts:
        raise ExportError("parity check needs at least one text")
    encodings = tokenizer.encode_batch(list(texts))
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs, onnx_embedding = session.run(
        list(ONNX_OUTPUTS), {ONNX_INPUT_IDS: input_ids, ONNX_ATTENTION_MASK: attention_mask}
    )
    wrapper = ClassifierWithEmbedding(model).eval()
    with torch.no_grad():
        torch_probs, torch_embedding = wrapper(
            torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        )
    prob_diff = float(np.abs(onnx_probs - torch_probs.numpy()).max())
    embedding_diff = float(np.abs(onnx_embedding - torch_embedding.numpy()).max())
    log.info(
        "export.parity",
        texts=len(texts),
        max_abs_prob_diff=prob_diff,
        max_abs_embedding_diff=embedding_diff,
    )
    if not prob_diff < tolerance:
        raise ExportError(
            f"ONNX/torch probability mismatch {prob_diff:.2e} >= {tolerance:.0e} "
            f"on {len(texts)} texts"
        )
    return prob_diff
