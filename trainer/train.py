"""Fine-tune the base model on a task, evaluate it, export it and write a new model version.

`train_and_export` reads top to bottom like a recipe (in the spirit of transformers'
run_glue.py), one named step a line: resolve the run and refuse a label-set change -> seeds and
threads -> data -> tokenizer and model -> fine-tune (`trainer.loop`) -> evaluate against the
baseline -> ONNX export + parity check -> variants -> drift reference -> report -> atomic
version write. Everything runs in-process so tests and demos can call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from tokenizers import Tokenizer
from torch import nn

from contracts import serving
from contracts.reference import write_reference
from trainer.baseline import tfidf_baseline
from trainer.checkpoint import Checkpoint, run_id
from trainer.data import Columns, Example, Split, stratified_split, training_split
from trainer.export import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    PAD_TOKEN,
    ClassifierWithEmbedding,
    base_tokenizer_json,
    check_parity,
    export_onnx,
    serving_tokenizer,
)
from trainer.hybrid import Hybrid, check_tfidf_parity, export_tfidf, fit_hybrid
from trainer.loop import TrainStats, fine_tune
from trainer.metrics import classification_metrics
from trainer.modeling import build_classifier
from trainer.onnx_runner import QUIET, OnnxClassifier
from trainer.options import TrainOptions
from trainer.quantize import Precision, compare_variants, install_variant
from trainer.reference import reference_statistics
from trainer.report import write_report
from trainer.repository import (
    RepositoryError,
    data_fingerprint,
    gpu_render_options,
    instance_kind,
    latest_version,
    model_path,
    prune_versions,
    write_config,
    write_version,
    write_warmup_text,
)
from trainer.settings import TrainerSettings, force_offline_hub
from trainer.tasks import Task, get_task

log = structlog.get_logger(__name__)


def set_seed(seed: int) -> None:
    """Seed every RNG that touches the run (classifier init, dropout, shuffling)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_torch(threads: int) -> None:
    """Pin torch's thread pools: on 2 shared cores the default oversubscribes and a step
    can take several times longer."""
    torch.set_num_threads(threads)
    # Fails once the pool exists (earlier parallel work in this process); harmless then.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def load_model(base_model: Path, task: Task, head: str = "mean") -> nn.Module:
    """The base checkpoint with a fresh classification head for the task's labels; offline."""
    force_offline_hub()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return build_classifier(base_model, task.labels, head)


def predict(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and mean-pooled embeddings, computed exactly as the exported graph does."""
    wrapper = ClassifierWithEmbedding(model).eval()
    probs, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encodings = tokenizer.encode_batch(list(texts[start : start + batch_size]))
            batch_probs, batch_embeddings = wrapper(
                torch.tensor([e.ids for e in encodings], dtype=torch.int64),
                torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64),
            )
            probs.append(batch_probs.numpy())
            embeddings.append(batch_embeddings.numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


def parity_texts(validation: Sequence[Example], count: int) -> list[str]:
    """Real texts plus the edge cases serving sees: replaced bytes and over-long input."""
    texts = [example.text for example in validation[:count]]
    return [*texts, b"caf\xc3 \xff broken bytes".decode("utf-8", errors="replace"), "word " * 600]


@dataclass
class Run:
    """One run's resolved inputs: what every step of the recipe reads."""

    spec: Task
    options: TrainOptions
    settings: TrainerSettings
    repository: Path
    model_name: str
    data: Path
    fingerprint: str
    log: Any


@dataclass
class Evaluation:
    """The fine-tuned model and the classical baseline, scored on the same validation rows."""

    texts: list[str]
    truth: np.ndarray
    scores: dict[str, Any]
    baseline: dict[str, Any]
    probs: np.ndarray | None = None
    """The transformer's validation probabilities (torch)."""
    hybrid: dict[str, Any] | None = None
    """With a hybrid: its weight, how it was chosen, and each model's scores apart."""

    @property
    def margin_points(self) -> float:
        return round(100 * (self.scores["accuracy"] - self.baseline["accuracy"]), 2)


def train_and_export(
    task: str,
    data: Path,
    *,
    settings: TrainerSettings,
    options: TrainOptions,
    repository: Path | None = None,
    model_name: str | None = None,
    columns: Columns | None = None,
    validation_data: Path | None = None,
    new_model: bool = False,
    precision: Precision = "fp32",
    device: str = "cpu",
    keep: int | None = None,
) -> Path:
    """Train, evaluate, export and write the next version of `model_name`; returns its dir.

    `options` come from `TrainOptions.for_task` (the task's preset plus what was given).
    `validation_data` replaces the held-out split with a file of its own (e.g. SST-2's dev set);
    `new_model` allows a label set that differs from the model's existing versions;
    `precision` picks the served ONNX variant (int8 for CPU, fp16 for GPU; fp32 is kept beside
    it and both are compared); `device` sets the Triton instance kind; `keep` prunes old versions.
    """
    run = prepare_run(task, data, settings, options, repository, model_name, new_model)
    set_seed(run.options.seed)
    configure_torch(run.options.torch_threads)
    split = load_examples(run, validation_data, columns)

    tokenizer_json = base_tokenizer_json(settings.base_model)
    tokenizer = serving_tokenizer(tokenizer_json, run.options.max_length)
    model = load_model(settings.base_model, run.spec, run.options.head)

    checkpoint = open_checkpoint(run, columns)
    fine_tuned_on, blend_rows = hold_out_blend_rows(run, split.train)
    stats = fine_tune(
        model,
        tokenizer,
        fine_tuned_on,
        run.options,
        split.validation,
        len(run.spec.labels),
        checkpoint,
    )
    run.log.info("train.trained", **dataclasses.asdict(stats))

    evaluation = evaluate_against_baseline(run, model, tokenizer, split)
    hybrid = select_hybrid(run, model, tokenizer, split, blend_rows) if run.options.hybrid else None
    if hybrid is not None:
        score_hybrid(run, evaluation, hybrid)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    classifier = classifier_record(run, model, tokenizer, precision, created_at, hybrid)
    metrics = metrics_record(run, evaluation, stats, len(fine_tuned_on), created_at)

    def build(staging: Path) -> None:
        """Export into the staging dir; a failed parity check aborts the version."""
        export_checked_onnx(staging, model, tokenizer_json, run.options, split.validation, metrics)
        if hybrid is not None:
            export_hybrid(staging, hybrid, evaluation, metrics)
        add_variants(staging, precision, tokenizer_json, run, evaluation, metrics)
        write_served_reference(staging, tokenizer_json, run, evaluation, hybrid)
        write_version_report(staging, run, evaluation, metrics, classifier)

    version_dir = write_model_version(run, device, build, classifier, metrics)
    checkpoint.remove()
    if keep:
        pruned = prune_versions(run.repository / run.model_name, keep)
        run.log.info("train.pruned", versions=pruned, keep=keep)
    return version_dir


def prepare_run(
    task: str,
    data: Path,
    settings: TrainerSettings,
    options: TrainOptions,
    repository: Path | None,
    model_name: str | None,
    new_model: bool,
) -> Run:
    """Resolve names and defaults, and refuse a run that could not be written, before any
    training time is spent."""
    spec = get_task(task)
    repository = Path(repository or settings.repository)
    model_name = model_name or spec.default_model_name
    # model_path refuses names that escape the repository.
    check_label_set(model_path(repository, model_name), spec.labels, allow_change=new_model)
    return Run(
        spec=spec,
        options=options.with_fallbacks(settings.seed, settings.torch_threads),
        settings=settings,
        repository=repository,
        model_name=model_name,
        data=Path(data),
        fingerprint=data_fingerprint(Path(data)),
        log=log.bind(task=spec.name, model=model_name),
    )


def load_examples(run: Run, validation_data: Path | None, columns: Columns | None) -> Split:
    """The training and validation examples, capped as the options say."""
    opts, labels = run.options, run.spec.labels
    split = training_split(
        run.data, labels, opts.validation_fraction, opts.seed, validation_data, columns
    )
    train = split.train[: opts.max_train_samples] if opts.max_train_samples else split.train
    validation = (
        split.validation[: opts.max_eval_samples] if opts.max_eval_samples else split.validation
    )
    run.log.info(
        "train.start",
        train_examples=len(train),
        validation_examples=len(validation),
        torch_threads=opts.torch_threads,
        options=dataclasses.asdict(opts),
    )
    return Split(train=train, validation=validation)


def open_checkpoint(run: Run, columns: Columns | None) -> Checkpoint:
    """The checkpoint of exactly this run: same task, data, columns, base model and options."""
    options = dataclasses.asdict(run.options)
    del options["progress"]
    identity = run_id(
        task=run.spec.name,
        model=run.model_name,
        data=run.fingerprint,
        columns=dataclasses.asdict(columns or Columns()),
        base_model=str(run.settings.base_model),
        options=options,
    )
    return Checkpoint(run.settings.checkpoint_dir, identity)


def evaluate_against_baseline(
    run: Run, model: nn.Module, tokenizer: Tokenizer, split: Split
) -> Evaluation:
    """Score the model on the validation rows, and a TF-IDF baseline trained on the same rows."""
    texts = [example.text for example in split.validation]
    truth = np.array([example.label for example in split.validation])
    probs, _ = predict(model, tokenizer, texts, run.options.eval_batch_size)
    evaluation = Evaluation(
        texts=texts,
        truth=truth,
        scores=classification_metrics(truth, probs, list(run.spec.labels)),
        probs=probs,
        baseline=tfidf_baseline(
            [example.text for example in split.train],
            [example.label for example in split.train],
            texts,
            truth,
            run.spec.labels,
            seed=run.options.seed,
        ),
    )
    run.log.info(
        "train.evaluated",
        accuracy=evaluation.scores["accuracy"],
        macro_f1=evaluation.scores["macro_f1"],
        ece=evaluation.scores["ece"],
        baseline_accuracy=evaluation.baseline["accuracy"],
        margin_points=evaluation.margin_points,
    )
    return evaluation


def hold_out_blend_rows(run: Run, train: list[Example]) -> tuple[list[Example], list[Example]]:
    """(rows the transformer fine-tunes on, rows the blend weight is chosen on).

    Only a hybrid with `blend_fraction` > 0 holds rows out, stratified by label; the TF-IDF
    model and the baseline still fit every training row.
    """
    fraction = run.options.blend_fraction
    if not run.options.hybrid or fraction <= 0:
        return train, []
    parts = stratified_split(train, fraction, run.options.seed + 1)
    run.log.info("train.blend_rows_held_out", rows=len(parts.validation), fraction=fraction)
    return parts.train, parts.validation


def select_hybrid(
    run: Run,
    model: nn.Module,
    tokenizer: Tokenizer,
    split: Split,
    blend_rows: Sequence[Example] = (),
) -> Hybrid:
    """The TF-IDF model and its blend weight, from the training rows alone.

    The weight is chosen on `blend_rows` (training rows the transformer was not fine-tuned
    on), or, when there are none, on all training rows with in-sample transformer
    probabilities (see trainer/hybrid.py on which way that leans). Validation rows are never
    read.
    """
    texts = [example.text for example in split.train]
    labels = [example.label for example in split.train]
    weight_rows = None
    scored = texts
    if blend_rows:
        held = {id(example) for example in blend_rows}
        weight_rows = [i for i, example in enumerate(split.train) if id(example) in held]
        scored = [texts[i] for i in weight_rows]
    transformer_probs, _ = predict(model, tokenizer, scored, run.options.eval_batch_size)
    hybrid = fit_hybrid(
        texts,
        labels,
        transformer_probs,
        len(run.spec.labels),
        seed=run.options.seed,
        weight_rows=weight_rows,
    )
    run.log.info(
        "train.hybrid_selected",
        weight=hybrid.weight,
        weight_rows=hybrid.weight_rows,
        fit_seconds=hybrid.fit_seconds,
    )
    return hybrid


def score_hybrid(run: Run, evaluation: Evaluation, hybrid: Hybrid) -> None:
    """Score the served blend on the validation rows: it becomes the version's headline
    score, the transformer's and the TF-IDF model's own scores are kept beside it."""
    labels = list(run.spec.labels)
    tfidf_probs = hybrid.probs(evaluation.texts)
    blended = serving.blend(evaluation.probs, tfidf_probs, hybrid.weight)
    keys = ("accuracy", "macro_f1", "ece")
    tfidf_scores = classification_metrics(evaluation.truth, tfidf_probs, labels)
    evaluation.hybrid = {
        **hybrid.record(),
        "transformer": {key: evaluation.scores[key] for key in keys},
        "tfidf": {key: tfidf_scores[key] for key in keys},
        "folds": hybrid.folds,
        "fit_seconds": hybrid.fit_seconds,
        "training_rows_curve": hybrid.curve,
    }
    evaluation.scores = classification_metrics(evaluation.truth, blended, labels)
    run.log.info(
        "train.hybrid_evaluated",
        weight=hybrid.weight,
        accuracy=evaluation.scores["accuracy"],
        transformer_accuracy=evaluation.hybrid["transformer"]["accuracy"],
        tfidf_accuracy=evaluation.hybrid["tfidf"]["accuracy"],
    )


def export_hybrid(
    staging: Path, hybrid: Hybrid, evaluation: Evaluation, metrics: dict[str, Any]
) -> None:
    """tfidf.onnx, checked against scikit-learn on validation texts as served (raises)."""
    path = export_tfidf(hybrid.pipeline, staging / serving.TFIDF_ONNX)
    texts = [*evaluation.texts[:200], "", "   ", "caf\ufffd \u00e9t\u00e9 #39; <b>", "x " * 600]
    metrics["hybrid"]["parity_max_abs_prob_diff"] = check_tfidf_parity(hybrid, path, texts)


def classifier_record(
    run: Run,
    model: nn.Module,
    tokenizer: Tokenizer,
    precision: Precision,
    created_at: str,
    hybrid: Hybrid | None = None,
) -> dict[str, Any]:
    """classifier.json: what model.py and the worker need to serve and describe the version."""
    record = {
        "task": run.spec.name,
        "model_name": run.model_name,
        "labels": list(run.spec.labels),
        "max_length": run.options.max_length,
        "pad_token": PAD_TOKEN,
        "pad_id": tokenizer.token_to_id(PAD_TOKEN) or 0,
        "embedding_dim": int(model.config.hidden_size),
        "embedding_pooling": "mean",
        "embedding_normalized": False,
        "onnx": {"inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES), "opset": OPSET},
        "base_model": str(getattr(model.config, "_name_or_path", "") or run.settings.base_model),
        "created_at": created_at,
        "precision": precision,
    }
    if hybrid is not None:
        record["hybrid"] = hybrid.record()
    return record


BASELINE_KEYS = ("name", "setup", "accuracy", "macro_f1", "ece", "fit_seconds")


def metrics_record(
    run: Run, evaluation: Evaluation, stats: TrainStats, train_examples: int, created_at: str
) -> dict[str, Any]:
    """metrics.json: scores, the baseline, how the loop went and the run's provenance."""
    baseline = evaluation.baseline
    return {
        **evaluation.scores,
        "baseline": {key: baseline[key] for key in BASELINE_KEYS if key in baseline},
        "margin_over_baseline_points": evaluation.margin_points,
        "train_examples": train_examples,
        "steps": stats.steps,
        "epochs_run": stats.epochs_run,
        "train_seconds": round(stats.seconds, 3),
        "seconds_per_step": round(stats.seconds_per_step, 4),
        "final_loss": stats.final_loss,
        "best_step": stats.best_step,
        "stopped_early": stats.stopped_early,
        "stopped_by_budget": stats.stopped_by_budget,
        "resumed_from_step": stats.resumed_from_step,
        "validation_curve": stats.evaluations,
        "data_fingerprint": run.fingerprint,
        "options": dataclasses.asdict(run.options),
        "data": str(run.data),
        "created_at": created_at,
        **({"hybrid": evaluation.hybrid} if evaluation.hybrid is not None else {}),
    }


def export_checked_onnx(
    staging: Path,
    model: nn.Module,
    tokenizer_json: str,
    options: TrainOptions,
    validation: Sequence[Example],
    metrics: dict[str, Any],
) -> None:
    """tokenizer.json and model.onnx, exported with the tokenizer as published and checked
    against the torch model (a mismatch raises and aborts the version)."""
    started = time.perf_counter()
    (staging / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    published_tokenizer = serving_tokenizer(
        (staging / "tokenizer.json").read_text(encoding="utf-8"), options.max_length
    )
    export_onnx(model, published_tokenizer, staging / "model.onnx")
    metrics["parity_max_abs_prob_diff"] = check_parity(
        model,
        staging / "model.onnx",
        published_tokenizer,
        parity_texts(validation, options.parity_texts),
    )
    metrics["export_seconds"] = round(time.perf_counter() - started, 3)


def add_variants(
    staging: Path,
    precision: Precision,
    tokenizer_json: str,
    run: Run,
    evaluation: Evaluation,
    metrics: dict[str, Any],
) -> None:
    """Serve the chosen precision; with a variant, measure it beside fp32 into metrics."""
    files = install_variant(staging, precision)
    if len(files) > 1:
        metrics["variants"] = compare_variants(
            files,
            tokenizer_json,
            run.options.max_length,
            evaluation.texts,
            evaluation.truth,
            num_labels=len(run.spec.labels),
            threads=run.options.torch_threads,
        )


def write_served_reference(
    staging: Path,
    tokenizer_json: str,
    run: Run,
    evaluation: Evaluation,
    hybrid: Hybrid | None = None,
) -> None:
    """reference.json from the served files' own outputs: drift compares like with like (a
    hybrid's probabilities are the served blend, its embedding the transformer's)."""
    served = OnnxClassifier.from_files(
        staging / "model.onnx", tokenizer_json, run.options.max_length, labels=run.spec.labels
    )
    if hybrid is not None:
        served.served.attach_hybrid(staging / serving.TFIDF_ONNX, hybrid.weight, QUIET)
    served_probs, served_embeddings = served.predict(evaluation.texts)
    write_reference(
        staging,
        reference_statistics(
            served_probs.argmax(axis=1),
            served_probs,
            evaluation.texts,
            served_embeddings,
            run.spec.labels,
            run.options.seed,
            truth=evaluation.truth,
        ),
    )


def write_version_report(
    staging: Path,
    run: Run,
    evaluation: Evaluation,
    metrics: dict[str, Any],
    classifier: dict[str, Any],
) -> None:
    """report.md and its confusion-matrix picture."""
    write_report(
        staging,
        metrics,
        evaluation.baseline,
        metrics.get("variants"),
        {
            "model_name": run.model_name,
            "task": run.spec.name,
            "created_at": classifier["created_at"],
            "base_model": classifier["base_model"],
            "data": str(run.data),
            "data_fingerprint": run.fingerprint,
        },
    )


def write_model_version(
    run: Run,
    device: str,
    build: Callable[[Path], None],
    classifier: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """The model's config for the device, then the version directory, atomically."""
    model_dir = run.repository / run.model_name
    if instance_kind(device) == "KIND_GPU":
        write_warmup_text(model_dir)
        write_config(model_dir, run.model_name, **gpu_render_options())
    version_dir = write_version(
        run.repository,
        run.model_name,
        build,
        labels=run.spec.labels,
        classifier=classifier,
        metrics=metrics,
    )
    run.log.info(
        "train.version_written",
        version_dir=str(version_dir),
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
    )
    return version_dir


def check_label_set(model_dir: Path, labels: Sequence[str], *, allow_change: bool) -> None:
    """A model name keeps one label set: consumers and drift references depend on it."""
    newest = latest_version(model_dir)
    if newest is None or allow_change:
        return
    existing = json.loads((model_dir / str(newest) / "labels.json").read_text(encoding="utf-8"))
    if list(existing) != list(labels):
        raise RepositoryError(
            f"{model_dir.name} version {newest} has labels {existing}, this run has {list(labels)};"
            " train under another --model name, or pass --new-model to change the label set"
        )
