"""Run an exported classifier exactly as `triton_models/model.py` does, without Triton.

Both run `contracts/serving.py`: the same tokenizer setup, length-sorted chunks padded to their
own longest row, session options and thread default, read from the same config.pbtxt. So a
score measured here is the score the served version gets. No torch: it must start fast in
`trainer evaluate` and stay usable where only the model extra is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts import serving
from trainer.repository import read_model_config

QUIET = 3
"""ONNX Runtime log severity here: errors only, so its warnings stay out of the trainer's output."""


@dataclass
class OnnxClassifier:
    """The serving recipe on one ONNX file; `predict` sends texts as Triton requests would."""

    served: serving.ServedModel

    @classmethod
    def from_files(
        cls,
        onnx_path: Path,
        tokenizer_json: str,
        max_length: int,
        *,
        labels: Sequence[str] = (),
        pad_token: str = serving.DEFAULT_PAD_TOKEN,
        pad_id: int | None = None,
        providers: Sequence[str | tuple[str, dict]] = serving.CPU_PROVIDERS,
        threads: int | None = None,
    ) -> OnnxClassifier:
        """A classifier from loose parts (a variant before its version exists), run under the
        default config: CPU chunks, every usable core unless `threads` says otherwise."""
        tokenizer = serving.serving_tokenizer(tokenizer_json, max_length)
        served = serving.ServedModel.from_parts(
            Path(onnx_path),
            tokenizer,
            serving.pad_id(tokenizer, pad_token, pad_id),
            labels=labels,
            rows=serving.rows_per_run({}),
            threads=threads,
            providers=providers,
            log_severity=QUIET,
        )
        return cls(served)

    @classmethod
    def from_version_dir(
        cls,
        version_dir: Path,
        onnx_name: str = serving.SERVED_ONNX,
        *,
        providers: Sequence[str | tuple[str, dict]] = serving.CPU_PROVIDERS,
        threads: int | None = None,
    ) -> OnnxClassifier:
        """A version under its model's config.pbtxt, as a CPU instance of Triton loads it;
        `threads` None means the served default (INTRA_OP_THREADS or the cores' share)."""
        version_dir = Path(version_dir)
        served = serving.ServedModel.load(
            version_dir,
            read_model_config(version_dir.parent),
            providers=providers,
            onnx_name=onnx_name,
            threads=threads,
            log_severity=QUIET,
        )
        return cls(served)

    @property
    def labels(self) -> list[str]:
        return self.served.labels

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually got (a missing GPU silently means CPU)."""
        return list(self.served.session.get_providers())

    def predict(
        self, texts: Sequence[str], batch_size: int = 64, with_embedding: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probs [n, labels], embedding [n, dim] or None), `batch_size` texts per request."""
        if not texts:
            raise ValueError("predict needs at least one text")
        probs: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            batch_probs, embedding = self.served.run(batch, with_embedding)
            probs.append(batch_probs)
            if with_embedding:
                embeddings.append(embedding)
        return (
            np.concatenate(probs).astype(np.float32, copy=False),
            np.concatenate(embeddings).astype(np.float32, copy=False) if with_embedding else None,
        )
