"""`trainer` command line: `trainer train ...` and `trainer publish ...`.

Heavy imports (torch, transformers) happen inside `train`, so `publish` starts quickly.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trainer.settings import TrainerSettings
from trainer.tasks import TASKS

app = typer.Typer(
    help="Fine-tune, export and publish labelstream classifiers.", no_args_is_help=True
)
console = Console()

TaskName = StrEnum("TaskName", {name: name for name in TASKS})


@app.command()
def train(
    task: Annotated[TaskName, typer.Option(help="Task preset (labels and model name).")],
    data: Annotated[Path, typer.Option(help="TSV/CSV file with columns text, label.")],
    repository: Annotated[
        Path | None, typer.Option(help="Triton model repository (env TRAINER_REPOSITORY).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the task's).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per text (default 64).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch size (default 32).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs when --max-steps is unset.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Cap the training set.")] = None,
    max_eval_samples: Annotated[int | None, typer.Option(help="Cap the validation set.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak AdamW LR (5e-5).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (env TRAINER_SEED).")] = None,
    torch_threads: Annotated[
        int | None, typer.Option(help="torch threads (env TRAINER_TORCH_THREADS).")
    ] = None,
) -> None:
    """Fine-tune on DATA, evaluate, export to ONNX and write the next model version."""
    from trainer.data import DataError
    from trainer.train import train_and_export

    try:
        version_dir = train_and_export(
            task.value,
            data,
            repository,
            model,
            max_steps=max_steps,
            max_length=max_length,
            batch_size=batch_size,
            epochs=epochs,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
            learning_rate=learning_rate,
            seed=seed,
            torch_threads=torch_threads,
        )
    except DataError as exc:
        console.print(f"[red]bad data:[/red] {exc}")
        raise typer.Exit(2) from exc
    metrics = json.loads((version_dir / "metrics.json").read_text(encoding="utf-8"))
    table = Table(title=f"{version_dir.parent.name} version {version_dir.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "macro_f1", "examples", "train_examples", "steps", "train_seconds"):
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"new version: [bold]{version_dir}[/bold]")


@app.command()
def publish(
    model: Annotated[str, typer.Option("--model", help="Model name in the repository.")],
    version: Annotated[
        int | None, typer.Option(help="Version to serve (default: newest on disk).")
    ] = None,
    repository: Annotated[
        Path | None, typer.Option(help="Triton model repository (env TRAINER_REPOSITORY).")
    ] = None,
    triton_url: Annotated[
        str | None, typer.Option(help="Triton gRPC address (env TRAINER_TRITON_URL).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the load.")] = 120.0,
) -> None:
    """Load a version into the running Triton and check it answers."""
    from trainer.publish import PublishError
    from trainer.publish import publish as publish_version

    settings = TrainerSettings()
    try:
        result = publish_version(
            model,
            repository or settings.repository,
            triton_url or settings.triton_url,
            version=version,
            timeout_s=timeout,
        )
    except PublishError as exc:
        console.print(f"[red]publish failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]serving[/green] {result.model} version {result.version} "
        f"labels={result.labels} load={result.load_seconds:.2f}s "
        f"warm-up={result.warmup_seconds:.3f}s"
    )
