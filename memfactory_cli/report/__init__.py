"""Readable outputs of runs: an evaluation's summary.json / summary.md / summary.png, a training run's curves.png,
answer retention and the HTML memory-trace viewer.

Pure functions of plain dicts (results rows, rollouts, metrics.jsonl lines, summary entries): nothing here loads or
runs a model; the one thing of the stack used is the answer normaliser (``rewards.qa``), so a reference is matched
the same way it is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memfactory_cli.io import atomic_path, atomic_write_text
from memfactory_cli.report.summary import before_after_table, comparison, primary_metric, to_json, to_markdown
from memfactory_cli.report.trace import diff_html, trace_html, trace_text

__all__ = ["before_after_table", "comparison", "diff_html", "primary_metric", "trace_html", "trace_text", "write_summary"]


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
