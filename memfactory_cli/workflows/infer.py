"""``memfactory infer``: one question about one document through the agent's ``respond``, with its memory trace
(MemAgent: the memory after each chunk; Memory-R1 and RMM: the memories the answer saw, built from the document read
as a conversation).

``--html`` also writes the self-contained memory-trace viewer (each chunk beside the memory it led to, the reference
answer marked, the step that dropped it flagged); ``--from results.jsonl`` renders the rows of an earlier
``memfactory eval``, ``--from runs/x/rollouts.jsonl`` the sampled trajectories of a training run, instead of running a
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memfactory_cli.agents.base import Request
from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.io import read_jsonl, read_text_file
from memfactory_cli.workflows.common import build_env, eval_generator, inference_model, load_policy


def write_html(path: str, records: list[dict[str, Any]], title: str) -> Path:
    from memfactory_cli.io import atomic_write_text
    from memfactory_cli.report import trace_html

    out = Path(path)
    if out.is_dir():
        raise UserError(f"--html {path}: is a folder; give a file name such as trace.html")
    atomic_write_text(out, trace_html(records, title))
    return out


def read_results(path: str, sets: list[str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a results.jsonl or rollouts.jsonl (any JSONL of trajectory records), optionally of some sets only."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--from {path}: file not found")
    rows = []
    try:
        records = read_jsonl(p, torn_tail="drop")  # a killed eval may leave a torn last line
    except UserError as exc:
        raise UserError(f"--from {exc}") from None
    for n, row in enumerate(records, 1):
        if not isinstance(row, dict) or "answer" not in row:
            raise UserError(f"--from {path}: record {n} is not a trajectory record (no 'answer')")
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
    context = read_text_file(doc, "document")
    if not question.strip():
        raise UserError("--question must not be empty")
    policy = load_policy(cfg, model)
    agent, tokenizer, lm = policy.agent, policy.tokenizer, inference_model(cfg, policy)
    request = Request(question, context, list(references or []))
    (response,) = agent.respond(request, eval_generator(lm, tokenizer, cfg.eval, cfg.generation))
    trajectory = response.trajectory
    console = Console()
    for i, memory in enumerate(response.trace, 1):
        console.print(Panel(memory or "[dim](empty)[/dim]", title=agent.trace_title.format(i=i, n=len(response.trace))))
    console.print(Panel(response.answer or "[dim](empty)[/dim]", title="answer", border_style="green"))
    record = trajectory.to_record()
    if references:
        env = build_env(cfg)
        row = trajectory.episode.row
        record["scores"] = {**env.score(response.answer, request.references, env.metric_names([row])), **trajectory.scores}
        console.print("scores: " + ", ".join(f"{k}={'-' if v is None else f'{v:.3f}'}" for k, v in record["scores"].items()))
    if html:
        console.print(f"wrote {write_html(html, [record], f'memory trace: {Path(doc).name}')}")
    return record
