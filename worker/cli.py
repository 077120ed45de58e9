"""`worker` command line: run the stream processor, create topics, produce, tail and review.

The embedded local stack has its own command line, `labelstream-stack` (`devstack/`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from worker.security import kafka_client_kwargs
from worker.settings import WorkerSettings, get_settings, run_cli

app = typer.Typer(help="labelstream worker: Kafka -> Triton -> Kafka text classification.")
drift_app = typer.Typer(help="Drift reports per model and window.")
app.add_typer(drift_app, name="drift")
console = Console(stderr=True)


def limit_blas_threads(threads: int):
    """Cap the BLAS pools of numpy and scipy. Their default (one thread per core, spinning
    when idle) cost the worker ~20 % of its CPU per message on the small matrices of the drift
    path (bench/README.md); the returned limiter keeps the cap while it is referenced."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


@app.command()
def run() -> None:
    """Run the Faust worker with the routes from the settings."""
    import faust

    from worker.app import create_app
    from worker.codecs import MissingCodecError, check_codecs
    from worker.logging import configure_logging, logging_config
    from worker.metrics import start_metrics_server
    from worker.topics import RequestLimitError, check_request_limit, ensure_topics

    try:
        check_codecs()
    except MissingCodecError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise SystemExit(2) from exc
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Faust never creates source topics, and the drift table needs its samples topic
    # partitioned like its changelog: create whatever is missing before joining the group.
    asyncio.run(ensure_topics(settings))
    try:
        asyncio.run(check_request_limit(settings))
    except RequestLimitError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, however wide
        raise SystemExit(2) from exc
    faust_app = create_app(settings)  # imports numpy and scipy: their BLAS is loaded now
    blas = limit_blas_threads(settings.numpy_threads)  # noqa: F841 - holds the limit while running
    start_metrics_server(settings.metrics_port)
    worker = faust.Worker(
        faust_app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format),
        redirect_stdouts=False,
    )
    # At WARNING and above Faust's start-up spinner sets the root logger to DEBUG so that it
    # spins on every record; aiokafka then builds a debug record per message sent (8 % of the
    # worker's CPU under load, py-spy). Without the spinner the level is what LOG_LEVEL says.
    worker.spinner = None
    worker.execute_from_commandline()


@app.command()
def topics() -> None:
    """Create the source, sink and dead-letter topics (idempotent)."""
    from worker.topics import ensure_topics

    asyncio.run(ensure_topics(get_settings()))


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="Topic to write to, e.g. news.raw")],
    file: Annotated[Path, typer.Argument(help="JSON Lines file, one message per line")],
) -> None:
    """Produce every line of a JSON Lines file as one message (key = its id when present)."""
    from worker.client import produce as produce_messages

    def messages():
        for line in file.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                key = str(orjson.loads(line).get("id", "")).encode() or None
            except (orjson.JSONDecodeError, AttributeError):
                key = None
            yield key, line

    settings = get_settings()
    sent = asyncio.run(
        produce_messages(
            settings.kafka_bootstrap_servers,
            topic,
            messages(),
            security=kafka_client_kwargs(settings),
        )
    )
    console.print(f"produced {sent} messages to {topic}")


@app.command()
def tail(
    topic: Annotated[list[str], typer.Argument(help="Labelled topics to read")],
    limit: Annotated[int, typer.Option(help="Rows to show")] = 20,
) -> None:
    """Print what is on labelled topics now, as a table (committed records: read_committed)."""
    from worker.client import read_topics

    settings = get_settings()
    records = asyncio.run(
        read_topics(settings.kafka_bootstrap_servers, topic, security=kafka_client_kwargs(settings))
    )
    table = Table(title=f"{len(records)} records on {', '.join(topic)}")
    for column in ("id", "label", "confidence", "model", "text/meta"):
        table.add_column(column)
    for record in records[-limit:]:
        body = orjson.loads(record.value or b"{}")
        model = body.get("model", {})
        table.add_row(
            str(body.get("id")),
            str(body.get("label")),
            f"{body.get('confidence', 0):.3f}",
            f"{model.get('name')}:{model.get('version')}",
            json.dumps(body.get("meta"))[:60],
        )
    Console().print(table)


@app.command()
def review(
    by: Annotated[
        str | None, typer.Option(help="Your name on the feedback records (default: $USER)")
    ] = None,
) -> None:
    """Label the records the model was unsure of, oldest first: 1-9 picks a label (published
    to the feedback topic), s skips, q quits."""
    from worker.review import default_reviewer, run_review

    name = (by if by is not None else default_reviewer()).strip()
    if not name:
        console.print("[red]error:[/red] --by must not be blank")
        raise SystemExit(2)
    raise SystemExit(run_review(get_settings(), name, console))


@app.command()
def schemas(out: Annotated[Path | None, typer.Option(help="Write to this file")] = None) -> None:
    """Print the JSON Schemas of the input, labelled and dead-letter records."""
    from worker.schemas import json_schemas

    text = json.dumps(json_schemas(), indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        print(text)


@drift_app.command("tail")
def drift_tail(
    limit: Annotated[int, typer.Option(help="Latest reports to show")] = 20,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
) -> None:
    """Print the latest drift reports from the drift topic, status coloured."""
    from worker.client import read_topics
    from worker.drift_view import drift_table

    settings = get_settings()
    records = asyncio.run(
        read_topics(
            settings.kafka_bootstrap_servers,
            [settings.drift.topic],
            security=kafka_client_kwargs(settings),
        )
    )
    reports = [orjson.loads(r.value) for r in records if r.value]
    if model:
        reports = [r for r in reports if r["model"]["name"] == model]
    reports.sort(key=lambda r: r["window"]["end"] or "")
    reports = reports[-limit:]
    if as_json:
        for report in reports:
            print(orjson.dumps(report).decode())
        return
    title = f"{len(reports)} drift reports on {settings.drift.topic}"
    Console(width=max(Console().width, 160)).print(drift_table(reports, title))


def main() -> None:
    """Entry point: a bad setting is one line per variable and exit code 2, not a traceback."""
    run_cli(app, WorkerSettings, console)
