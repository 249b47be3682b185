"""Readable outputs of an evaluation: summary.json / summary.md / summary.png and the HTML memory-trace viewer.

Pure rendering: this package sees plain dicts (results rows, summary entries) and imports nothing of the stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memfactory_cli.io import atomic_path, atomic_write_text
from memfactory_cli.report.summary import before_after_table, comparison, primary_metric, to_json, to_markdown
from memfactory_cli.report.trace import diff_html, trace_html

__all__ = ["before_after_table", "comparison", "diff_html", "primary_metric", "trace_html", "write_summary"]


def write_summary(out_dir: Path, entries: list[dict[str, Any]]) -> dict[str, Path]:
    """Write summary.json, summary.md and summary.png, each atomically (a kill leaves the old file or the new)."""
    from memfactory_cli.report.plot import plot

    paths = {"json": out_dir / "summary.json", "md": out_dir / "summary.md", "png": out_dir / "summary.png"}
    atomic_write_text(paths["json"], to_json(entries))
    atomic_write_text(paths["md"], to_markdown(entries))
    if entries:
        with atomic_path(paths["png"]) as tmp:
            plot(entries, tmp)
    return paths
