"""`trainer` command line: train, publish, and inspect or score what the repository holds.

Heavy imports (torch, transformers) happen inside `train`, so the other commands start quickly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contracts.review import FEEDBACK_TOPIC, REVIEW_TOPIC
from trainer.options import TrainOptions, train_option_flags
from trainer.settings import TrainerSettings
from trainer.tasks import TASKS
from worker.settings import run_cli

if TYPE_CHECKING:
    from trainer.retrain import RetrainReport

app = typer.Typer(
    help="Fine-tune, export and publish labelstream classifiers.", no_args_is_help=True
)
console = Console()

TaskName = StrEnum("TaskName", {name: name for name in TASKS})

RepositoryOption = Annotated[
    Path | None, typer.Option(help="Triton model repository (env TRAINER_REPOSITORY).")
]
TritonOption = Annotated[
    str | None, typer.Option(help="Triton gRPC address (env TRAINER_TRITON_URL).")
]


@app.callback()
def configure(ctx: typer.Context) -> None:
    """Read the settings once and configure logging, whichever command runs."""
    from worker.logging import configure_logging

    settings = TrainerSettings()
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


def _model_dir(settings: TrainerSettings, repository: Path | None, name: str) -> Path:
    """The model's directory, or exit 2 with the reason when the name escapes the repository."""
    from trainer.repository import UnsafeModelName, model_path

    try:
        return model_path(Path(repository or settings.repository), name)
    except UnsafeModelName as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


@contextmanager
def _refusals(*refused: type[Exception], code: int, prefix: str) -> Iterator[None]:
    """Turn the expected errors of a command into one red line and an exit code."""
    try:
        yield
    except refused as exc:
        console.print(f"[red]{prefix}[/red]{escape(str(exc))}")
        raise typer.Exit(code) from exc


def _served_precision(quantize: str | None, precision: str | None) -> str:
    """The variant to serve, or exit 2 when the two flags ask for something impossible."""
    if quantize not in (None, "int8") or precision not in (None, "fp32", "fp16"):
        console.print('[red]--quantize takes "int8"; --precision takes "fp16" or "fp32"[/red]')
        raise typer.Exit(2)
    if quantize and precision == "fp16":
        console.print("[red]choose one of --quantize int8 and --precision fp16[/red]")
        raise typer.Exit(2)
    return quantize or precision or "fp32"


@app.command()
@train_option_flags
def train(
    ctx: typer.Context,
    task: Annotated[TaskName, typer.Option(help="Task preset (labels and model name).")],
    data: Annotated[Path, typer.Option(help="TSV/CSV/JSONL file with a text and a label column.")],
    options: dict[str, Any],
    repository: RepositoryOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the task's).")
    ] = None,
    text_col: Annotated[str, typer.Option(help="Column (or JSON key) with the text.")] = "text",
    label_col: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    title_col: Annotated[
        str | None, typer.Option(help="Optional title column, joined to the text.")
    ] = None,
    quantize: Annotated[
        str | None, typer.Option(help='"int8": serve a dynamically quantized model (CPU).')
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help='"fp16": serve a half-precision model (GPU).')
    ] = None,
    device: Annotated[str, typer.Option(help='Triton instance kind: "cpu" or "gpu".')] = "cpu",
    keep: Annotated[
        int | None, typer.Option(help="Keep only the newest N versions after writing.")
    ] = None,
    new_model: Annotated[
        bool, typer.Option(help="Allow a label set that differs from existing versions.")
    ] = False,
    validation_data: Annotated[
        Path | None, typer.Option(help="Validate on this file instead of a held-out split.")
    ] = None,
    base_model: Annotated[
        Path | None,
        typer.Option(help="Local Hugging Face model directory (env TRAINER_BASE_MODEL)."),
    ] = None,
) -> None:
    """Fine-tune on DATA, evaluate, export to ONNX and write the next model version."""
    from trainer.data import Columns, DataError
    from trainer.repository import RepositoryError
    from trainer.train import train_and_export

    settings: TrainerSettings = ctx.obj
    if base_model:
        settings = settings.model_copy(update={"base_model": base_model})
    if model is not None:
        _model_dir(settings, repository, model)
    served = _served_precision(quantize, precision)
    with (
        _refusals(DataError, code=2, prefix="bad data: "),
        _refusals(RepositoryError, code=2, prefix="refused: "),
    ):
        version_dir = train_and_export(
            task.value,
            data,
            settings=settings,
            options=TrainOptions.for_task(task.value, **options),
            repository=repository,
            model_name=model,
            columns=Columns(text=text_col, label=label_col, title=title_col),
            validation_data=validation_data,
            new_model=new_model,
            precision=served,
            device=device,
            keep=keep,
        )
    _print_version(version_dir)


VERSION_ROWS = (
    "accuracy",
    "macro_f1",
    "ece",
    "margin_over_baseline_points",
    "examples",
    "train_examples",
    "steps",
    "best_step",
    "train_seconds",
)


def _print_version(version_dir: Path) -> None:
    """The new version's headline scores and where it was written."""
    metrics = json.loads((version_dir / "metrics.json").read_text(encoding="utf-8"))
    table = Table(title=f"{version_dir.parent.name} version {version_dir.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in VERSION_ROWS:
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"new version: [bold]{version_dir}[/bold]")


def parse_share(text: str) -> float:
    """`10%` or `0.1` -> 0.1; anything outside (0, 1] is refused."""
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 < value <= 1:
        raise typer.BadParameter(f"canary share must be in (0%, 100%], got {text!r}")
    return value


def _rollout(
    settings: TrainerSettings, model: str, repository: Path | None, triton_url: str | None
):
    from trainer.rollout import Rollout
    from worker.security import kafka_client_kwargs, triton_client_kwargs

    _model_dir(settings, repository, model)
    return Rollout(
        model=model,
        repository=Path(repository or settings.repository),
        triton_url=triton_url or settings.triton_url,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        registry_topic=settings.registry_topic,
        grace_s=settings.rollout_grace_s,
        kafka_security=kafka_client_kwargs(settings),
        triton_tls=triton_client_kwargs(settings),
        config_name=settings.model_config_name,
    )


def _run_step(step) -> None:
    from trainer.publish import PublishError

    try:
        entry = step()
    except PublishError as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    candidate = entry.candidate
    console.print(
        f"[green]{entry.event}[/green] {entry.model}: active version {entry.active}"
        + (f", {candidate.role} version {candidate.version}" if candidate else "")
        + (
            f" ({candidate.share:.0%} of traffic)"
            if candidate and candidate.role == "canary"
            else ""
        )
    )


@app.command()
def publish(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name in the repository.")],
    version: Annotated[
        int | None, typer.Option(help="Version to serve (default: newest on disk).")
    ] = None,
    canary: Annotated[
        str | None, typer.Option(help="Serve beside the active version for this share, e.g. 10%.")
    ] = None,
    shadow: Annotated[
        bool, typer.Option(help="Send every message to it too; publish only the active labels.")
    ] = False,
    repository: RepositoryOption = None,
    triton_url: TritonOption = None,
) -> None:
    """Load a version into Triton, warm it up and record it in the registry topic."""
    if canary is not None and shadow:
        raise typer.BadParameter("--canary and --shadow exclude each other")
    share = parse_share(canary) if canary is not None else None
    rollout = _rollout(ctx.obj, model, repository, triton_url)
    _run_step(lambda: rollout.publish(version, canary=share, shadow=shadow))


@app.command()
def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to make active.")],
    repository: Annotated[Path | None, typer.Option(help="Triton model repository.")] = None,
    triton_url: TritonOption = None,
) -> None:
    """Make VERSION the active version; the old one is unloaded once no traffic goes to it."""
    rollout = _rollout(ctx.obj, model, repository, triton_url)
    _run_step(lambda: rollout.promote(version))


@app.command()
def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    repository: Annotated[Path | None, typer.Option(help="Triton model repository.")] = None,
    triton_url: TritonOption = None,
) -> None:
    """Drop the canary/shadow candidate, or go back to the previously active version."""
    rollout = _rollout(ctx.obj, model, repository, triton_url)
    _run_step(rollout.rollback)


@app.command()
@train_option_flags
def retrain(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model name in the repository.")],
    data: Annotated[Path, typer.Option(help="The base training data (as `trainer train`).")],
    options: dict[str, Any],
    canary: Annotated[
        str, typer.Option(help="Traffic share of the new version when it is published.")
    ] = "10%",
    max_drop: Annotated[
        float,
        typer.Option(help="Refuse when held-out accuracy drops more than this (0.01: 1 point)."),
    ] = 0.01,
    feedback_topic: Annotated[str, typer.Option(help="People's labels.")] = FEEDBACK_TOPIC,
    review_topic: Annotated[str, typer.Option(help="The worker's reviews.")] = REVIEW_TOPIC,
    text_col: Annotated[str, typer.Option(help="Column (or JSON key) with the text.")] = "text",
    label_col: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    title_col: Annotated[
        str | None, typer.Option(help="Optional title column, joined to the text.")
    ] = None,
    validation_data: Annotated[
        Path | None, typer.Option(help="Hold these rows out instead of a split of DATA.")
    ] = None,
    repository: RepositoryOption = None,
    triton_url: TritonOption = None,
    base_model: Annotated[
        Path | None,
        typer.Option(help="Local Hugging Face model directory (env TRAINER_BASE_MODEL)."),
    ] = None,
) -> None:
    """Train on DATA plus the corrections on the feedback topic; publish the new version as a
    canary unless its held-out accuracy is more than --max-drop below the active version's."""
    from trainer.data import Columns, DataError
    from trainer.publish import PublishError
    from trainer.repository import RepositoryError
    from trainer.retrain import LiveIO, RetrainError, RetrainRequest
    from trainer.retrain import retrain as run_retrain

    share = parse_share(canary)
    settings: TrainerSettings = ctx.obj
    updates = {"repository": repository, "base_model": base_model}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    request = RetrainRequest(
        model=model,
        data=data,
        canary=share,
        max_drop=max_drop,
        feedback_topic=feedback_topic,
        review_topic=review_topic,
        options=options,
        columns=Columns(text=text_col, label=label_col, title=title_col),
        validation_data=validation_data,
    )
    io = LiveIO(settings, _rollout(settings, model, repository, triton_url))
    with (
        _refusals(DataError, code=2, prefix="bad data: "),
        _refusals(RepositoryError, code=2, prefix="refused: "),
        _refusals(RetrainError, code=1, prefix="refused: "),
        _refusals(PublishError, code=1, prefix="publish failed: "),
    ):
        report = run_retrain(request, settings, io)
    _print_retrain(report)
    if not report.published:
        raise typer.Exit(1)


def _print_retrain(report: RetrainReport) -> None:
    """What the corrections changed, both versions' scores, and the decision."""
    read = report.corrections
    ignored = ", ".join(f"{why} {count}" for why, count in sorted(read["ignored"].items()))
    console.print(
        f"corrections: {read['read']} feedback records read, {read['used']} used"
        + (f", ignored: {ignored}" if ignored else "")
    )
    changes = Table(title="what the corrections changed (training rows)")
    for column in ("label", "relabelled to it", "relabelled from it", "confirmed", "added"):
        changes.add_column(column, justify="left" if column == "label" else "right")
    moves = report.changes["relabelled_from_to"]
    for label in _labels_of(report):
        changes.add_row(
            label,
            str(sum(m["rows"] for m in moves if m["to"] == label)),
            str(sum(m["rows"] for m in moves if m["from"] == label)),
            str(report.changes["confirmed_by_label"].get(label, 0)),
            str(report.changes["added_by_label"].get(label, 0)),
        )
    console.print(changes)
    _print_comparison(report)
    colour = "green" if report.published else "red"
    console.print(f"[{colour}]{escape(report.reason)}[/{colour}]; report: {report.version_dir}")


def _labels_of(report: RetrainReport) -> list[str]:
    moves = report.changes["relabelled_from_to"]
    named = {m["from"] for m in moves} | {m["to"] for m in moves}
    named |= set(report.changes["confirmed_by_label"]) | set(report.changes["added_by_label"])
    return sorted(named)


def _print_comparison(report: RetrainReport) -> None:
    scores = Table(
        title=f"{report.model}: active version {report.active_version} "
        f"against new version {report.new_version}"
    )
    for column in ("rows", "metric", "active", "new", "change (points)"):
        scores.add_column(column, justify="left" if column in ("rows", "metric") else "right")
    for name, by_role in report.scores.items():
        rows = f"{name.replace('_', '-')} ({by_role['active']['rows']})"
        # Over a few corrections, macro-F1 mostly counts the labels they do not have.
        for metric in ("accuracy", "macro_f1") if name == "held_out" else ("accuracy",):
            active, new = by_role["active"][metric], by_role["new"][metric]
            scores.add_row(
                rows, metric, f"{active:.4f}", f"{new:.4f}", f"{100 * (new - active):+.2f}"
            )
    console.print(scores)


def _format(value: Any) -> str:
    """Scores with 4 decimals, lists comma-joined, everything else as is."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value)


@app.command("list")
def list_command(ctx: typer.Context, repository: RepositoryOption = None) -> None:
    """Models in the repository with their versions and the newest version's scores."""
    from trainer.repository import list_models

    root = repository or ctx.obj.repository
    models = list_models(root)
    if not models:
        console.print(f"no models in {root}")
        return
    table = Table(title=f"models in {root}")
    for column in ("model", "versions", "newest", "accuracy", "macro_f1", "created_at"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for entry in models:
        table.add_row(
            entry["model"],
            _format(entry["versions"]),
            _format(entry["newest"]),
            _format(entry.get("accuracy")),
            _format(entry.get("macro_f1")),
            _format(entry.get("created_at", "")[:19]),
        )
    console.print(table)


@app.command("gpu-config")
def gpu_config(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None, typer.Argument(help="Model names (default: every model).")
    ] = None,
    instances: Annotated[int, typer.Option(help="Triton instances per GPU.")] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size.")] = 64,
    trt_cache_dir: Annotated[
        str, typer.Option(help="TensorRT engine cache inside the Triton container.")
    ] = "/trt-cache",
    repository: RepositoryOption = None,
) -> None:
    """Write configs/gpu.pbtxt (KIND_GPU, TensorRT/CUDA, warm-up) for Triton's
    --model-config-name=gpu; config.pbtxt (CPU, local stack) stays as it is."""
    from trainer.repository import list_models, write_gpu_config

    root = repository or ctx.obj.repository
    names = models or [entry["model"] for entry in list_models(root)]
    for name in names:
        path = write_gpu_config(
            _model_dir(ctx.obj, root, name),
            name,
            instance_count=instances,
            max_batch_size=max_batch_size,
            trt_cache_dir=trt_cache_dir,
        )
        console.print(f"wrote {path}")


@app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name in the repository.")],
    version: Annotated[int | None, typer.Argument(help="Version (default: newest).")] = None,
    repository: RepositoryOption = None,
) -> None:
    """One version's scores, provenance (created, data fingerprint, base model) and files."""
    from trainer.repository import RepositoryError, list_versions, version_info

    model_dir = _model_dir(ctx.obj, repository, name)
    try:
        info = version_info(model_dir, version)
    except RepositoryError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    table = Table(
        title=f"{name} version {info['version']} (versions: {_format(list_versions(model_dir))})"
    )
    table.add_column("field")
    table.add_column("value")
    for key, value in info.items():
        if key in ("model", "version", "files", "variants"):
            continue
        table.add_row(key, _format(value))
    for file_name, size in info["files"].items():
        table.add_row(f"file {file_name}", f"{size:,} bytes")
    console.print(table)
    variants = info.get("variants")
    if isinstance(variants, dict) and variants:
        compared = Table(title="variants (measured side by side at export)")
        columns = ("accuracy", "macro_f1", "texts_per_s", "max_prob_diff_vs_first", "size_bytes")
        compared.add_column("variant")
        for column in columns:
            compared.add_column(column, justify="right")
        for variant, stats in variants.items():
            note = " (cpu only)" if stats.get("cpu_only_measurement") else ""
            compared.add_row(f"{variant}{note}", *(_format(stats.get(c)) for c in columns))
        console.print(compared)


def _triton_predict(
    url: str,
    model: str,
    version: int | None,
    texts: list[str],
    batch_size: int,
    tls: dict[str, Any],
) -> tuple[Any, list[str], str]:
    """(probs, labels, served version) from a running Triton, in `batch_size` requests."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from contracts import tensors
    from contracts.triton_request import requested_outputs, text_input

    client = grpcclient.InferenceServerClient(url, **tls)
    probs, labels, served = [], [], ""
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            result = client.infer(
                model,
                [text_input(chunk)],
                model_version=str(version or ""),
                outputs=requested_outputs((tensors.PROBS, tensors.LABELS)),
            )
            probs.append(result.as_numpy(tensors.PROBS))
            labels = [label.decode("utf-8") for label in result.as_numpy(tensors.LABELS)[0]]
            served = result.get_response().model_version
    finally:
        client.close()
    return np.concatenate(probs), labels, served


@dataclass
class Scored:
    """A labelled file scored by one version: what `trainer evaluate` prints."""

    truth: list[int]
    probs: Any
    labels: list[str]
    served: str
    source: str


def _score_through_triton(
    settings: TrainerSettings, url: str, model: str, version: int | None, data: Path, batch: int
) -> Scored:
    """Score through a live Triton; the server's LABELS decide how the file's labels map."""
    from tritonclient.utils import InferenceServerException

    from trainer.data import read_examples
    from worker.security import triton_client_kwargs

    tls = triton_client_kwargs(settings)
    try:
        _, labels, _ = _triton_predict(url, model, version, ["probe"], 1, tls)
        examples = read_examples(data, labels)
        texts = [example.text for example in examples]
        probs, labels, served = _triton_predict(url, model, version, texts, batch, tls)
    except InferenceServerException as exc:
        console.print(f"[red]Triton at {url} failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    truth = [example.label for example in examples]
    return Scored(truth, probs, labels, served, source=f"triton {url}")


def _score_files(
    model_dir: Path,
    version: int | None,
    data: Path,
    onnx_file: str,
    threads: int | None,
    batch_size: int,
) -> Scored:
    """Score with the version's ONNX file and tokenizer, run here the way model.py runs them."""
    from trainer.data import read_examples
    from trainer.onnx_runner import OnnxClassifier
    from trainer.repository import RepositoryError, latest_version, list_versions

    served = str(version or latest_version(model_dir) or "")
    if not served or int(served) not in list_versions(model_dir):
        raise RepositoryError(
            f"version {version or '(newest)'} not found in {model_dir}: {list_versions(model_dir)}"
        )
    runner = OnnxClassifier.from_version_dir(model_dir / served, onnx_file, threads=threads)
    examples = read_examples(data, runner.labels)
    texts = [example.text for example in examples]
    probs, _ = runner.predict(texts, batch_size, with_embedding=False)
    truth = [example.label for example in examples]
    return Scored(truth, probs, runner.labels, served, source=str(model_dir / served / onnx_file))


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model name in the repository.")],
    data: Annotated[Path, typer.Option(help="TSV/CSV file with columns text, label.")],
    version: Annotated[
        int | None, typer.Option(help="Version (default: newest on disk / served).")
    ] = None,
    repository: RepositoryOption = None,
    triton_url: Annotated[
        str | None,
        typer.Option(help="Score through this running Triton (gRPC) instead of the files."),
    ] = None,
    onnx_file: Annotated[
        str, typer.Option(help="ONNX file in the version dir, e.g. model.fp32.onnx.")
    ] = "model.onnx",
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per inference call.")] = 64,
    threads: Annotated[
        int | None, typer.Option(help="ONNX Runtime threads (default: as Triton serves it).")
    ] = None,
) -> None:
    """Score a labelled file with a version exactly as served; prints scores, writes nothing.

    Without --triton-url the version's ONNX file and tokenizer run here the way model.py runs
    them; with it the texts go through the live server, and its LABELS decide the label order.
    """
    from trainer.data import DataError
    from trainer.repository import RepositoryError

    model_dir = _model_dir(ctx.obj, repository, model)
    started = time.perf_counter()
    with (
        _refusals(DataError, code=2, prefix="bad data: "),
        _refusals(RepositoryError, FileNotFoundError, code=1, prefix=""),
    ):
        if triton_url:
            scored = _score_through_triton(ctx.obj, triton_url, model, version, data, batch_size)
        else:
            scored = _score_files(model_dir, version, data, onnx_file, threads, batch_size)
    title = f"{model} version {scored.served}: {data.name}"
    _print_scores(title, scored, time.perf_counter() - started)


def _print_scores(title: str, scored: Scored, seconds: float) -> None:
    from trainer.metrics import classification_scores

    scores = classification_scores(scored.truth, scored.probs.argmax(axis=1), len(scored.labels))
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (
        ("accuracy", scores["accuracy"]),
        ("macro_f1", scores["macro_f1"]),
        ("examples", len(scored.truth)),
        ("labels", scored.labels),
        ("source", scored.source),
        ("seconds", f"{seconds:.2f}"),
    ):
        table.add_row(key, _format(value))
    console.print(table)


def main() -> None:
    """Entry point: a bad setting is one line per variable and exit code 2, not a traceback."""
    run_cli(app, TrainerSettings, console)
