"""Run an exported classifier exactly as `triton_models/model.py` does, without Triton.

Same tokenizer setup (truncate to `max_length`, pad to the longest row with the classifier's pad
token), same ONNX Runtime session options (sequential, no spinning, all optimizations) and same
input/output names, so a score measured here is the score the served version gets. No torch: it
must start fast in `trainer evaluate` and stay usable where only the model extra is installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from trainer.settings import available_cores

SERVED_ONNX = "model.onnx"
ONNX_PROBS = "probs"
ONNX_EMBEDDING = "embedding"
DEFAULT_PAD_TOKEN = "[PAD]"
DEFAULT_MAX_LENGTH = 128
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def usable_cores() -> int:
    """Cores this process may use (affinity aware), the same default model.py applies."""
    return available_cores()


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """model.py's session options; `threads` None or 0 means every usable core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads and threads > 0 else usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_tokenizer(
    tokenizer_json: str,
    max_length: int,
    pad_token: str = DEFAULT_PAD_TOKEN,
    pad_id: int | None = None,
) -> Tokenizer:
    """The serving tokenizer: truncation and padding configured as model.py configures them."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=max_length)
    if pad_id is None:
        pad_id = tokenizer.token_to_id(pad_token) or 0
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


@dataclass
class OnnxClassifier:
    """One ONNX session plus its tokenizer; `predict` returns probs and embeddings for texts."""

    session: ort.InferenceSession
    tokenizer: Tokenizer
    labels: list[str] = field(default_factory=list)
    max_length: int = DEFAULT_MAX_LENGTH

    @classmethod
    def from_files(
        cls,
        onnx_path: Path,
        tokenizer_json: str,
        max_length: int,
        *,
        labels: Sequence[str] = (),
        pad_token: str = DEFAULT_PAD_TOKEN,
        pad_id: int | None = None,
        providers: Sequence[str | tuple[str, dict]] = CPU_PROVIDERS,
        threads: int | None = None,
    ) -> OnnxClassifier:
        """A classifier from loose parts (used to compare variants before a version exists)."""
        session = ort.InferenceSession(
            str(onnx_path), sess_options=session_options(threads), providers=list(providers)
        )
        tokenizer = make_tokenizer(tokenizer_json, max_length, pad_token, pad_id)
        return cls(session, tokenizer, list(labels), max_length)

    @classmethod
    def from_version_dir(
        cls,
        version_dir: Path,
        onnx_name: str = SERVED_ONNX,
        *,
        providers: Sequence[str | tuple[str, dict]] = CPU_PROVIDERS,
        threads: int | None = None,
    ) -> OnnxClassifier:
        """Load a version directory the way model.py's `initialize` does."""
        version_dir = Path(version_dir)
        classifier = json.loads((version_dir / "classifier.json").read_text(encoding="utf-8"))
        labels = json.loads((version_dir / "labels.json").read_text(encoding="utf-8"))
        return cls.from_files(
            version_dir / onnx_name,
            (version_dir / "tokenizer.json").read_text(encoding="utf-8"),
            int(classifier.get("max_length", DEFAULT_MAX_LENGTH)),
            labels=labels,
            pad_token=classifier.get("pad_token", DEFAULT_PAD_TOKEN),
            pad_id=classifier.get("pad_id"),
            providers=providers,
            threads=threads,
        )

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually got (a missing GPU silently means CPU)."""
        return list(self.session.get_providers())

    def run_batch(self, texts: Sequence[str], with_embedding: bool = True) -> list[np.ndarray]:
        """One tokenizer call and one session run, as model.py does per dynamic batch."""
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(list(texts))
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        names = [ONNX_PROBS, ONNX_EMBEDDING] if with_embedding else [ONNX_PROBS]
        return self.session.run(names, feeds)

    def predict(
        self, texts: Sequence[str], batch_size: int = 64, with_embedding: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probs [n, labels], embedding [n, dim] or None) for `texts`, in `batch_size` chunks."""
        if not texts:
            raise ValueError("predict needs at least one text")
        probs: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            outputs = self.run_batch(texts[start : start + batch_size], with_embedding)
            probs.append(outputs[0])
            if with_embedding:
                embeddings.append(outputs[1])
        return (
            np.concatenate(probs).astype(np.float32, copy=False),
            np.concatenate(embeddings).astype(np.float32, copy=False) if with_embedding else None,
        )
