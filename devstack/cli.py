"""`labelstream-stack up|down|status` (also `python -m devstack ...`).

`up` prints only `KEY=VALUE` lines on stdout, so `eval "$(labelstream-stack up)"` exports the
addresses; progress and logs go to stderr.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.table import Table

from devstack.local import LocalStack
from devstack.settings import StackSettings
from devstack.state import StackError
from worker.settings import WorkerSettings, get_settings, run_cli

app = typer.Typer(
    help="Embedded local Kafka + Triton (child processes, no Docker).", no_args_is_help=True
)
err = Console(stderr=True)


@app.callback()
def _logging() -> None:
    """Send logs to stderr unless the caller configured logging already (stdout is for eval)."""
    if not structlog.is_configured():
        from worker.logging import configure_logging

        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)


@app.command()
def up(
    load: Annotated[
        list[str] | None,
        typer.Option("--load", "-l", help="Model to load into Triton (repeatable)"),
    ] = None,
) -> None:
    """Start Kafka and Triton (same ports as last time), create topics, load models."""
    stack = _stack()
    try:
        with err.status("starting Kafka and Triton..."):
            addresses = asyncio.run(stack.up(load or []))
    except StackError as exc:
        err.print("[red]stack up failed:[/red]", end=" ")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    for key, value in addresses.env().items():
        print(f"{key}={value}")
    err.print(
        f"[green]stack up[/green]; state in {stack.state.path}; stop with `labelstream-stack down`"
    )


@app.command()
def down() -> None:
    """Stop Kafka and Triton by the pids in the state file; data and ports are kept."""
    stack = _stack()
    with err.status("stopping Triton and Kafka..."):
        asyncio.run(stack.down())
    err.print("[green]stack down[/green]")


@app.command()
def status() -> None:
    """Show each service; exit code 1 unless both are healthy."""
    stack = _stack()
    services = asyncio.run(stack.status())
    table = Table(title=f"local stack ({stack.state.path})")
    for column in ("service", "pid", "alive", "healthy", "address", "log"):
        table.add_column(column)
    for s in services:
        table.add_row(
            s.name, str(s.pid or "-"), _mark(s.alive), _mark(s.healthy), s.address or "-", s.log
        )
    Console().print(table)
    if not all(s.healthy for s in services):
        raise typer.Exit(1)


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]no[/red]"


def _stack() -> LocalStack:
    """The stack a worker with the environment's settings expects."""
    return LocalStack(get_settings(), StackSettings())


def main() -> None:
    """Entry point: a bad setting (the worker's or the launcher's) is one line per variable and
    exit code 2, not a traceback."""
    run_cli(lambda: run_cli(app, StackSettings, err), WorkerSettings, err)
