"""``memfactory infer``: read one document through the memory agent and show the memory after each chunk.

``--html`` also writes the self-contained memory-trace viewer; ``--from results.jsonl`` renders the rows of an
earlier ``memfactory eval`` instead of running a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.io import read_text_file
from memfactory_cli.models.loading import load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.workflows.common import build_agent, build_env, eval_generator, inference_model


def write_html(path: str, records: list[dict[str, Any]], title: str) -> Path:
    from memfactory_cli.io import atomic_write_text
    from memfactory_cli.report import trace_html

    out = Path(path)
    if out.is_dir():
        raise UserError(f"--html {path}: is a folder; give a file name such as trace.html")
    atomic_write_text(out, trace_html(records, title))
    return out


def read_results(path: str, sets: list[str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a results.jsonl (or any JSONL of trajectory records), optionally of some sets only."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--from {path}: file not found")
    rows = []
    lines = p.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):
                break  # the torn last line of a killed eval
            raise UserError(f"--from {path}: line {lineno} is not JSON") from None
        if not isinstance(row, dict) or "answer" not in row:
            raise UserError(f"--from {path}: line {lineno} is not a trajectory record (no 'answer')")
        if not sets or row.get("set") in sets:
            rows.append(row)
    if not rows:
        raise UserError(f"--from {path}: no rows{' of set ' + ', '.join(sets) if sets else ''}")
    return rows[:limit] if limit else rows


def render_results(path: str, html: str, sets: list[str] | None = None, limit: int | None = None) -> Path:
    rows = read_results(path, sets, limit)
    out = write_html(html, rows, f"memory traces: {Path(path).name} ({len(rows)} rows)")
    print(f"wrote {out} ({len(rows)} trajectories)")
    return out


def run(
    recipe: str | None,
    overrides: list[str],
    doc: str,
    question: str,
    model: str | None = None,
    html: str | None = None,
    references: list[str] | None = None,
) -> dict:
    from rich.console import Console
    from rich.panel import Panel

    cfg = load_recipe(recipe, overrides)
    if model:
        cfg.model.name_or_path = model
    context = read_text_file(doc, "document")
    if not question.strip():
        raise UserError("--question must not be empty")
    device = resolve_device(cfg.trainer.device)
    model_path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    agent = build_agent(cfg, tokenizer)
    lm = inference_model(cfg, device, model_path, tokenizer)
    row = {"id": "0", "question": question, "context": context, "answers": list(references or [])}
    (trajectory,) = agent.rollout([agent.episode(row)], eval_generator(lm, tokenizer, cfg.eval))
    console = Console()
    for i, memory in enumerate(trajectory.memories, 1):
        console.print(Panel(memory or "[dim](empty)[/dim]", title=f"memory after chunk {i}/{len(trajectory.memories)}"))
    console.print(Panel(trajectory.answer or "[dim](empty)[/dim]", title="answer", border_style="green"))
    record = trajectory.to_record()
    if references:
        env = build_env(cfg)
        record["scores"] = env.score(trajectory.answer, row["answers"], env.metric_names([row]))
        console.print("scores: " + ", ".join(f"{k}={v:.3f}" for k, v in record["scores"].items()))
    if html:
        console.print(f"wrote {write_html(html, [record], f'memory trace: {Path(doc).name}')}")
    return record
