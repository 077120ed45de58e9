"""Drift reports as a terminal table (`worker drift tail`): one row per window, status coloured."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

STATUS_STYLE = {"ok": "green", "warn": "yellow", "drift": "bold red"}
COLUMNS = (
    "#",
    "end (UTC)",
    "model:version",
    "msgs",
    "dead %",
    "label PSI",
    "conf KS",
    "conf p50",
    "length PSI",
    "MMD²",
    "status",
    "reasons",
)


def _figure(section: dict[str, Any] | None, key: str, digits: int = 3) -> str:
    value = (section or {}).get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def report_row(report: dict[str, Any]) -> list[str]:
    """The cells of one report, in `COLUMNS` order; figures a window lacks show as `-`."""
    model = report["model"]
    status = report["status"]
    style = STATUS_STYLE.get(status, "")
    version = model["version"] or "-"
    if model.get("version_changed"):
        version = f"{model['previous_version']}->{version}"
    reasons = [r for r in report.get("reasons", []) if not r.startswith("info:")]
    return [
        report["window"]["id"].rsplit(":", 1)[-1],
        (report["window"]["end"] or "")[11:19],
        f"{model['name']}:{version}",
        str(report["messages"]),
        f"{100 * report['dead_letter_rate']:.1f}",
        _figure(report.get("labels"), "psi"),
        _figure(report.get("confidence"), "ks_distance"),
        _figure(report.get("confidence"), "p50", 2),
        _figure(report.get("text_length"), "psi"),
        _figure(report.get("embedding"), "mmd2", 4),
        f"[{style}]{status}[/]" if style else status,
        "; ".join(r.split(": ", 1)[-1] for r in reasons),
    ]


def drift_table(reports: Iterable[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column != "reasons")
    for report in reports:
        table.add_row(*report_row(report))
    return table
