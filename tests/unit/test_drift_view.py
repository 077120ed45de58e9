"""The drift table's cells for a full report and for one without a reference."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from worker.drift_view import COLUMNS, drift_table, report_row

REPORT = {
    "window": {"id": "news:7", "end": "2026-11-23T10:11:12.5+00:00"},
    "model": {"name": "news", "version": "3", "previous_version": "2", "version_changed": True},
    "messages": 1000,
    "dead_letter_rate": 0.012,
    "labels": {"psi": 0.41234},
    "confidence": {"ks_distance": 0.05, "p50": 0.934},
    "text_length": {"psi": 0.02},
    "embedding": {"mmd2": 0.123456},
    "status": "drift",
    "reasons": ["info: served version changed", "drift: predicted-label PSI 0.412 (p=1e-30)"],
}


def test_full_report_row() -> None:
    row = report_row(REPORT)
    assert dict(zip(COLUMNS, row, strict=True)) == {
        "#": "7",
        "end (UTC)": "10:11:12",
        "model:version": "news:2->3",
        "msgs": "1000",
        "dead %": "1.2",
        "label PSI": "0.412",
        "conf KS": "0.050",
        "conf p50": "0.93",
        "length PSI": "0.020",
        "MMD²": "0.1235",
        "status": "[bold red]drift[/]",
        "reasons": "predicted-label PSI 0.412 (p=1e-30)",
    }


def test_report_without_figures_shows_dashes_and_renders() -> None:
    bare = {
        **REPORT,
        "model": {"name": "news", "version": None},
        "labels": None,
        "status": "ok",
        "reasons": [],
    }
    del bare["confidence"], bare["text_length"], bare["embedding"]
    row = report_row(bare)
    assert row[2] == "news:-" and row[5:10] == ["-"] * 5 and row[10] == "[green]ok[/]"
    out = StringIO()
    Console(file=out, width=200).print(drift_table([REPORT, bare], "t"))
    assert "news:2->3" in out.getvalue() and "drift" in out.getvalue()
