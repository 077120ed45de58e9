"""The serving recipe: how a version directory turns texts into probabilities and embeddings.

Tokenize without padding (truncated to classifier.json's `max_length`), sort the rows by token
length, run them through one ONNX Runtime session in chunks of `rows_per_run` rows, each chunk
padded with the version's pad id only to its own longest row, and return the outputs in input
order. `triton_models/model.py` serves a version with it and `trainer evaluate`
(`trainer/onnx_runner.py`) scores one with it, so an offline score is the served score.

The trainer copies this file and `tensors.py` verbatim into every version directory, where
model.py imports them inside the official Triton container: standard library, numpy,
tokenizers and onnxruntime only.

Config parameters (config.pbtxt `parameters`, string values, all optional):
  INTRA_OP_THREADS  ONNX Runtime intra-op threads per instance; "0" or absent = the usable cores
                    shared out between the model's CPU instances (2 instances on 2 cores: 1
                    thread each). Spinning is off.
  ROWS_PER_RUN      rows per session run (default 16 on CPU, 64 on GPU).

A hybrid version (classifier.json has a `hybrid` record) also carries `tfidf.onnx`, a word and
character n-gram TF-IDF + logistic-regression graph: its probabilities are blended into the
transformer's, `weight * transformer + (1 - weight) * tfidf`, with the record's weight. The
embedding stays the transformer's. A version without the record is served as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from contracts import tensors

SERVED_ONNX = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CLASSIFIER_FILE = "classifier.json"
DEFAULT_MAX_LENGTH = 128
DEFAULT_PAD_TOKEN = "[PAD]"
DEFAULT_ROWS_PER_RUN = {"CPU": 16, "GPU": 64}
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
ORT_WARNING = 2
"""ONNX Runtime's own default log severity; the trainer passes 3 to keep its console quiet."""
TFIDF_ONNX = "tfidf.onnx"
TFIDF_INPUT = "text"
"""The TF-IDF graph's input: TYPE_STRING [batch, 1], texts already passed through `tfidf_text`."""
TFIDF_PROBS = "probabilities"


def parameter(model_config: dict, key: str, default: str) -> str:
    """A string parameter from config.pbtxt `parameters`, or `default` when unset."""
    value = model_config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def default_intra_op_threads(model_config: dict) -> int:
    """The usable cores divided between the model's CPU instances.

    Measured on 2 cores with Kafka and the worker beside Triton (bench/README.md): two
    single-threaded instances labelled 32 % more than one instance with two threads, whose
    threads wait for each other whenever a neighbour takes a core.
    """
    instances = sum(
        int(group.get("count", 1))
        for group in model_config.get("instance_group", [])
        if group.get("kind", "KIND_CPU") == "KIND_CPU"
    )
    return max(1, usable_cores() // max(1, instances))


def intra_op_threads(model_config: dict) -> int:
    """INTRA_OP_THREADS when set above 0, else the default share of the cores."""
    threads = int(parameter(model_config, "INTRA_OP_THREADS", "0"))
    return threads if threads > 0 else default_intra_op_threads(model_config)


def rows_per_run(model_config: dict, kind: str = "CPU") -> int:
    """ROWS_PER_RUN, or the default for the instance kind (`CPU` or `GPU`)."""
    default = DEFAULT_ROWS_PER_RUN.get(kind, DEFAULT_ROWS_PER_RUN["CPU"])
    return int(parameter(model_config, "ROWS_PER_RUN", str(default)))


def session_options(threads: int, log_severity: int = ORT_WARNING) -> ort.SessionOptions:
    """Sequential, no spinning, every graph optimization, `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = log_severity
    return options


def serving_tokenizer(tokenizer_json: str, max_length: int) -> Tokenizer:
    """The tokenizer truncating to `max_length` and padding nothing (`pad` does, per chunk)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def pad_id(tokenizer: Tokenizer, pad_token: str = DEFAULT_PAD_TOKEN, explicit: Any = None) -> int:
    """classifier.json's `pad_id` when given, else the id of `pad_token`, else 0."""
    if explicit is not None:
        return int(explicit)
    return int(tokenizer.token_to_id(pad_token) or 0)


def pad(rows: list[list[int]], pad_with: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask of rows padded to the longest row."""
    width = max(len(row) for row in rows)
    input_ids = np.full((len(rows), width), pad_with, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def tfidf_text(text: str) -> str:
    """What the TF-IDF model reads: lower-cased, every whitespace run one space, no ends.

    Done here in Python, by the trainer before fitting and by the served recipe before the
    graph, so the graph needs no StringNormalizer (locale-dependent lower-casing) and its
    character tokenizer (re2 `.`, which skips line breaks) sees the characters scikit-learn saw.
    """
    return " ".join(text.lower().split())


def blend(transformer: np.ndarray, tfidf: np.ndarray, weight: float) -> np.ndarray:
    """`weight * transformer + (1 - weight) * tfidf` per row, as float32 (rows still sum to 1)."""
    if transformer.shape != tfidf.shape:
        raise ValueError(f"cannot blend {transformer.shape} with {tfidf.shape} probabilities")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], got {weight}")
    mixed = weight * transformer.astype(np.float64) + (1.0 - weight) * tfidf.astype(np.float64)
    return mixed.astype(np.float32)


@dataclass
class TfidfModel:
    """A hybrid version's TF-IDF + logistic-regression graph and its blend weight."""

    session: ort.InferenceSession
    weight: float
    rows_per_run: int

    @classmethod
    def load(
        cls, onnx_path: Path, weight: float, *, rows: int, threads: int, log_severity: int
    ) -> TfidfModel:
        """The graph on the CPU provider: its string ops have no GPU kernels."""
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"blend weight must be in [0, 1], got {weight}")
        session = ort.InferenceSession(
            str(onnx_path),
            sess_options=session_options(threads, log_severity),
            providers=list(CPU_PROVIDERS),
        )
        return cls(session, float(weight), rows)

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """The TF-IDF model's class probabilities, `rows_per_run` texts a run."""
        prepared = [tfidf_text(text) for text in texts]
        out = []
        for start in range(0, len(prepared), self.rows_per_run):
            rows = prepared[start : start + self.rows_per_run]
            feed = np.array(rows, dtype=object).reshape(-1, 1)
            out.append(self.session.run([TFIDF_PROBS], {TFIDF_INPUT: feed})[0])
        return np.concatenate(out).astype(np.float32, copy=False)


@dataclass
class ServedModel:
    """One version's session and tokenizer; `run` is the recipe, per batch of texts."""

    session: ort.InferenceSession
    tokenizer: Tokenizer
    pad_id: int
    rows_per_run: int
    threads: int
    labels: list[str] = field(default_factory=list)
    embedding_dim: int = 0
    hybrid: TfidfModel | None = None
    """A hybrid version's TF-IDF model, blended into `run`'s probabilities when present."""

    @classmethod
    def load(
        cls,
        version_dir: Path,
        model_config: dict,
        *,
        kind: str = "CPU",
        providers: Sequence[Any] = CPU_PROVIDERS,
        onnx_name: str = SERVED_ONNX,
        threads: int | None = None,
        log_severity: int = ORT_WARNING,
    ) -> ServedModel:
        """A version directory under its model's config (Triton's JSON form of config.pbtxt).

        `threads` None or 0 means INTRA_OP_THREADS or the default share of the cores.
        """
        version_dir = Path(version_dir)
        classifier = read_json(version_dir / CLASSIFIER_FILE)
        tokenizer = serving_tokenizer(
            (version_dir / TOKENIZER_FILE).read_text(encoding="utf-8"),
            int(classifier.get("max_length", DEFAULT_MAX_LENGTH)),
        )
        served = cls.from_parts(
            version_dir / onnx_name,
            tokenizer,
            pad_id(
                tokenizer, classifier.get("pad_token", DEFAULT_PAD_TOKEN), classifier.get("pad_id")
            ),
            labels=read_json(version_dir / LABELS_FILE),
            rows=rows_per_run(model_config, kind),
            threads=threads if threads and threads > 0 else intra_op_threads(model_config),
            providers=providers,
            log_severity=log_severity,
        )
        hybrid = classifier.get("hybrid")
        if hybrid:
            served.attach_hybrid(
                version_dir / Path(hybrid.get("onnx", TFIDF_ONNX)).name,  # never outside
                hybrid["weight"],
                log_severity,
            )
        return served

    @classmethod
    def from_parts(
        cls,
        onnx_path: Path,
        tokenizer: Tokenizer,
        pad_with: int,
        *,
        labels: Sequence[str] = (),
        rows: int = DEFAULT_ROWS_PER_RUN["CPU"],
        threads: int | None = None,
        providers: Sequence[Any] = CPU_PROVIDERS,
        log_severity: int = ORT_WARNING,
    ) -> ServedModel:
        """A session from loose parts, probed once so a broken graph fails here, not later."""
        threads = threads if threads and threads > 0 else default_intra_op_threads({})
        session = ort.InferenceSession(
            str(onnx_path),
            sess_options=session_options(threads, log_severity),
            providers=list(providers),
        )
        served = cls(session, tokenizer, pad_with, rows, threads, list(labels))
        probs, embedding = served.run(["probe"], with_embedding=True)
        if served.labels and probs.shape != (1, len(served.labels)):
            raise ValueError(
                f"{Path(onnx_path).name} gives {probs.shape[1]} classes but there are "
                f"{len(served.labels)} labels"
            )
        served.embedding_dim = int(embedding.shape[1])
        return served

    def attach_hybrid(
        self, onnx_path: Path, weight: float, log_severity: int = ORT_WARNING
    ) -> None:
        """Blend a TF-IDF graph into `run`'s probabilities, probed once like the transformer."""
        hybrid = TfidfModel.load(
            onnx_path,
            weight,
            rows=self.rows_per_run,
            threads=self.threads,
            log_severity=log_severity,
        )
        probs = hybrid.probs(["probe"])
        if self.labels and probs.shape != (1, len(self.labels)):
            raise ValueError(
                f"{Path(onnx_path).name} gives {probs.shape[1]} classes but there are "
                f"{len(self.labels)} labels"
            )
        self.hybrid = hybrid

    def run(self, texts: Sequence[str], with_embedding: bool) -> tuple[np.ndarray, Any]:
        """(probs, embedding or None) in input order, run in length-sorted chunks; a hybrid
        version's probabilities are the blend, its embedding the transformer's."""
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        ids = [encoding.ids for encoding in encode(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        names = list(tensors.ONNX_OUTPUTS) if with_embedding else [tensors.ONNX_PROBS]
        results: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(order), self.rows_per_run):
            chunk = [ids[i] for i in order[start : start + self.rows_per_run]]
            input_ids, attention_mask = pad(chunk, self.pad_id)
            feeds = {tensors.ONNX_INPUT_IDS: input_ids, tensors.ONNX_ATTENTION_MASK: attention_mask}
            for result, output in zip(results, self.session.run(names, feeds), strict=True):
                result.append(output)
        unsort = np.argsort(order)
        stacked = [np.concatenate(result)[unsort] for result in results]
        probs = stacked[0]
        if self.hybrid is not None:
            probs = blend(probs, self.hybrid.probs(texts), self.hybrid.weight)
        return probs, (stacked[1] if with_embedding else None)
