"""The hybrid version's second model: word and character n-gram TF-IDF + logistic regression,
blended into the transformer's probabilities and exported to ONNX beside `model.onnx`.

Leakage. The blend weight is chosen on the training rows only, never on validation rows, and
on rows neither model was fitted on: the TF-IDF probabilities are out-of-fold (K folds: every
row is scored by a model fitted without it), and the transformer's come from the blend rows
(`blend_fraction` of the training rows, held out of its fine-tuning). Out-of-fold transformer
probabilities for every row would cost K more fine-tunes of the 40-minute budget. With
`blend_fraction` 0 the transformer's probabilities are in-sample: over-confident, so the weight
leans toward the transformer (on AG News it chose the plain model, `w = 1`). Validation rows are
only scored, once the weight is fixed.

Faithful export (skl2onnx `TfidfVectorizer` → ONNX Runtime's Tokenizer + TfIdfVectorizer ops):
- sublinear tf stays off (`SUBLINEAR_TF`): skl2onnx converts it as log(1 + tf), not 1 + log(tf);
- texts go through `contracts.serving.tfidf_text` (lower-case, single spaces) in Python on both
  sides, so the vectorizers run with `lowercase=False` and the graph has no StringNormalizer;
- word tokens use `WORD_PATTERN`, which Python's `re` and ONNX Runtime's re2 read alike
  (skl2onnx would swap scikit-learn's default `(?u)\\b\\w\\w+\\b` for `[a-zA-Z0-9_]+`, which
  also keeps one-letter words and so changes the bigrams);
- characters use analyzer "char" (skl2onnx refuses "char_wb") with n-grams from 1, so every
  character of a kept n-gram is itself in the vocabulary and the tokenizer's pad token, chosen
  outside that vocabulary, can never complete an n-gram (`check_exportable` asserts it).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline

from contracts import serving
from trainer.baseline import DEFAULT_C, min_df_for

WORD_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_]+"
CHAR_PATTERN = "."
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (1, 4)
SUBLINEAR_TF = False
"""Off: skl2onnx 1.20.0 converts sublinear tf as log(1 + tf), scikit-learn computes 1 + log(tf)
(measured here: up to 0.014 apart after l2 norm); raw counts convert exactly."""
FOLDS = 5
WEIGHT_GRID: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
PARITY_TOLERANCE = 1e-4
SETUP = (
    f"TF-IDF word {WORD_NGRAMS[0]}-{WORD_NGRAMS[1]} grams + char {CHAR_NGRAMS[0]}-"
    f"{CHAR_NGRAMS[1]} grams, sublinear tf={SUBLINEAR_TF}; logistic regression C={DEFAULT_C:g}"
)


class HybridError(ValueError):
    """The TF-IDF model cannot be fitted or exported faithfully."""


def tfidf_pipeline(train_size: int, seed: int, C: float = DEFAULT_C) -> Pipeline:
    """Word and character TF-IDF side by side, then logistic regression, all ONNX-convertible."""
    common: dict[str, Any] = {
        "lowercase": False,  # tfidf_text lower-cases, in Python, on both sides
        "sublinear_tf": SUBLINEAR_TF,
        "min_df": min_df_for(train_size),
        "dtype": np.float32,
    }
    features = FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(token_pattern=WORD_PATTERN, ngram_range=WORD_NGRAMS, **common),
            ),
            ("char", TfidfVectorizer(analyzer="char", ngram_range=CHAR_NGRAMS, **common)),
        ]
    )
    classifier = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    return Pipeline([("features", features), ("classifier", classifier)])


def class_probs(pipeline: Pipeline, prepared: Sequence[str], num_labels: int) -> np.ndarray:
    """scikit-learn's probabilities placed by label index (a fold may miss a class)."""
    probs = np.zeros((len(prepared), num_labels), dtype=np.float64)
    probs[:, pipeline.classes_] = pipeline.predict_proba(list(prepared))
    return probs


def out_of_fold_probs(
    prepared: Sequence[str], labels: Sequence[int], num_labels: int, *, folds: int, seed: int
) -> np.ndarray:
    """Each row's TF-IDF probabilities from the fold model that was fitted without it."""
    truth = np.asarray(labels)
    probs = np.zeros((len(prepared), num_labels), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(truth)), truth):
        pipeline = tfidf_pipeline(len(fit_rows), seed)
        pipeline.fit([prepared[i] for i in fit_rows], truth[fit_rows])
        probs[held_rows] = class_probs(pipeline, [prepared[i] for i in held_rows], num_labels)
    return probs


def choose_blend_weight(
    transformer_probs: np.ndarray,
    tfidf_probs: np.ndarray,
    labels: Sequence[int],
    grid: Sequence[float] = WEIGHT_GRID,
) -> tuple[float, list[dict[str, float]]]:
    """The grid weight whose blend has the lowest log-loss on these rows, and the whole curve.

    Log-loss rather than accuracy: it moves with every row's confidence, so the curve has one
    clear minimum instead of accuracy's plateaus. Ties go to the larger (transformer) weight.
    """
    truth = np.asarray(labels)
    if not len(truth) == len(transformer_probs) == len(tfidf_probs):
        raise HybridError("labels and both models' probabilities must have one row each")
    rows = np.arange(len(truth))
    curve = []
    for weight in grid:
        mixed = serving.blend(transformer_probs, tfidf_probs, weight)
        loss = -np.mean(np.log(np.clip(mixed[rows, truth].astype(np.float64), 1e-7, 1.0)))
        accuracy = np.mean(mixed.argmax(axis=1) == truth)
        curve.append(
            {"weight": float(weight), "log_loss": float(loss), "accuracy": float(accuracy)}
        )
    best = min(curve, key=lambda point: (round(point["log_loss"], 9), -point["weight"]))
    return best["weight"], curve


@dataclass
class Hybrid:
    """The fitted TF-IDF model, its blend weight and how that weight was chosen."""

    pipeline: Pipeline
    weight: float
    num_labels: int
    curve: list[dict[str, float]] = field(default_factory=list)
    folds: int = FOLDS
    fit_seconds: float = 0.0
    weight_rows: int = 0
    """How many training rows the weight was chosen on."""
    transformer_in_sample: bool = True
    """Whether the transformer had been fine-tuned on those rows."""

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """scikit-learn's probabilities on raw texts, prepared as the served graph prepares them."""
        return class_probs(self.pipeline, [serving.tfidf_text(t) for t in texts], self.num_labels)

    def record(self) -> dict[str, Any]:
        """classifier.json's `hybrid`: what the serving recipe needs, and where it came from."""
        vectorizers = dict(self.pipeline.named_steps["features"].transformer_list)
        return {
            "onnx": serving.TFIDF_ONNX,
            "weight": self.weight,
            "setup": SETUP,
            "features": {name: len(v.vocabulary_) for name, v in vectorizers.items()},
            "weight_chosen_by": (
                f"lowest log-loss over a {len(WEIGHT_GRID)}-point grid on {self.weight_rows} "
                f"training rows: {self.folds}-fold out-of-fold TF-IDF probabilities, "
                + (
                    "in-sample transformer"
                    if self.transformer_in_sample
                    else "transformer not fine-tuned on them"
                )
            ),
        }


def fit_hybrid(
    texts: Sequence[str],
    labels: Sequence[int],
    transformer_probs: np.ndarray,
    num_labels: int,
    *,
    seed: int,
    folds: int = FOLDS,
    weight_rows: Sequence[int] | None = None,
) -> Hybrid:
    """Choose the blend weight on these (training) rows, then fit the served model on all.

    `transformer_probs` are for `weight_rows` (indices into `texts`; default all rows): the rows
    the weight is chosen on, against the TF-IDF model's out-of-fold probabilities there.
    """
    rows = np.arange(len(texts)) if weight_rows is None else np.asarray(weight_rows, dtype=int)
    if not len(texts) == len(labels) or len(rows) != len(transformer_probs):
        raise HybridError("texts, labels and transformer probabilities must have one row each")
    if len(rows) == 0:
        raise HybridError("the blend weight needs at least one row to be chosen on")
    if set(labels) != set(range(num_labels)):
        raise HybridError(f"every one of the {num_labels} labels must occur in the training rows")
    started = time.perf_counter()
    prepared = [serving.tfidf_text(text) for text in texts]
    oof = out_of_fold_probs(prepared, labels, num_labels, folds=folds, seed=seed)
    truth = np.asarray(labels)
    weight, curve = choose_blend_weight(transformer_probs, oof[rows], truth[rows])
    pipeline = tfidf_pipeline(len(prepared), seed).fit(prepared, truth)
    return Hybrid(
        pipeline,
        weight,
        num_labels,
        curve,
        folds,
        round(time.perf_counter() - started, 3),
        weight_rows=len(rows),
        transformer_in_sample=weight_rows is None,
    )


def check_exportable(pipeline: Pipeline) -> None:
    """Refuse a char vocabulary where the ONNX tokenizer's pad token could complete an n-gram."""
    vectorizers = dict(pipeline.named_steps["features"].transformer_list)
    vocabulary = vectorizers["char"].vocabulary_
    singles = {gram for gram in vocabulary if len(gram) == 1}
    missing = {char for gram in vocabulary for char in gram} - singles
    if missing:
        raise HybridError(f"char n-grams use characters outside the vocabulary: {sorted(missing)}")


def export_tfidf(pipeline: Pipeline, path: Path) -> Path:
    """`tfidf.onnx`: string input [batch, 1] → `probabilities` [batch, labels] (no ZipMap)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    check_exportable(pipeline)
    vectorizers = dict(pipeline.named_steps["features"].transformer_list)
    options = {
        id(vectorizers["word"]): {"tokenexp": WORD_PATTERN},
        id(vectorizers["char"]): {"tokenexp": CHAR_PATTERN},
        id(pipeline.named_steps["classifier"]): {"zipmap": False},
    }
    with warnings.catch_warnings():  # "char may not work": check_tfidf_parity checks it does
        warnings.filterwarnings("ignore", "The conversion of CountVectorizer", UserWarning)
        graph = convert_sklearn(
            pipeline,
            "tfidf_logreg",
            initial_types=[(serving.TFIDF_INPUT, StringTensorType([None, 1]))],
            options=options,
        )
    path.write_bytes(graph.SerializeToString())
    return path


def check_tfidf_parity(
    hybrid: Hybrid, onnx_path: Path, texts: Sequence[str], tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max |probs_onnx - probs_sklearn| over `texts`, as served (chunks of 16); raises above."""
    served = serving.TfidfModel.load(onnx_path, hybrid.weight, rows=16, threads=1, log_severity=3)
    diff = float(np.abs(served.probs(texts) - hybrid.probs(texts)).max())
    if not diff < tolerance:
        raise HybridError(
            f"ONNX/scikit-learn TF-IDF probability mismatch {diff:.2e} >= {tolerance}"
        )
    return diff
