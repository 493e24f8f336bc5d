"""Turning a Report into what people read: a terminal/markdown table and a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

from optkit.files import atomic_write
from optkit.results import Report, write_model


def write_all(report: Report, run_dir: Path) -> None:
    from optkit.report.html import render_html

    write_model(Path(run_dir) / "report.json", report)
    atomic_write(Path(run_dir) / "report.html", render_html(report))
