"""Batched avg@k evaluation: every question x k sample advances turn by turn together.

avg@k = the mean over questions of the mean over k samples; its standard error is taken over questions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from memfactory_cli.agents.base import BaseAgent
from memfactory_cli.envs.base import Env
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator
from memfactory_cli.report.retention import summarise_records


def mean_stderr(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "stderr": math.sqrt(var / n)}


def rollout_pairs(
    agent: BaseAgent,
    env: Env,
    rows: list[dict[str, Any]],
    generator: Generator,
    pairs: list[tuple[int, int]],
    metrics: tuple[str, ...],
    batch: int,
) -> Iterator[list[dict[str, Any]]]:
    """Roll out (question index, sample index) pairs ``batch`` trajectories at a time; yield each batch's scored records.

    Any subset of pairs can be asked for, which is what lets a resumed eval roll out only what is missing. A
    trajectory may measure scores of its own (``scores``: RMM's retrieval recall); they join the answer's.
    """
    for start in range(0, len(pairs), max(1, batch)):
        chunk = pairs[start : start + max(1, batch)]
        questions = sorted({q for q, _ in chunk})
        episodes = dict(zip(questions, agent.episodes([rows[q] for q in questions])))
        trajectories = agent.rollout([episodes[q] for q, _ in chunk], generator)
        yield [
            {**t.to_record(), "q": q, "sample": s, "context_tokens": len(t.episode.context_ids), "scores": {**env.score(t.answer, t.episode.row["answers"], metrics), **t.scores}}
            for (q, s), t in zip(chunk, trajectories)
        ]


def summarise(
    records: list[dict[str, Any]], metrics: tuple[str, ...], n: int, k: int
) -> tuple[list[dict[str, float]], dict[str, dict[str, float]]]:
    """Per-question means over samples ``< k`` of questions ``< n``, and their mean and stderr over questions.

    A score of ``None`` (e.g. no judge verdict) is left out of its question's mean; a question with none at all is
    left out of that metric's summary.
    """
    by_question: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["q"] < n and r["sample"] < k:
            by_question.setdefault(r["q"], []).append(r["scores"])
    per_question = []
    for q in sorted(by_question):
        means = {}
        for m in metrics:
            values = [s[m] for s in by_question[q] if s.get(m) is not None]
            if values:
                means[m] = sum(values) / len(values)
        per_question.append(means)
    summary = {}
    for m in metrics:
        values = [pq[m] for pq in per_question if m in pq]
        if values:
            summary[m] = mean_stderr(values)
    return per_question, summary


def unscored(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, int]:
    """Per metric, the rows that have no score (``None`` or absent: no judge verdict, no gold, no retrieval); a
    summary reports them beside the means, so a missing score is never mistaken for a low one."""
    counts = {m: sum(r["scores"].get(m) is None for r in records) for m in metrics}
    return {m: n for m, n in counts.items() if n}


def field_of(row: dict[str, Any], path: str) -> Any:
    """A row's value at a dotted path (``meta.category``), or None."""
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def summarise_groups(
    records: list[dict[str, Any]], rows: list[dict[str, Any]], metrics: tuple[str, ...], k: int, path: str
) -> dict[str, dict[str, Any]]:
    """``summarise`` within each group of questions sharing the value of a row field (e.g. LoCoMo's category)."""
    groups: dict[str, set[int]] = {}
    for q, row in enumerate(rows):
        value = field_of(row, path)
        if value is not None:
            groups.setdefault(str(value), set()).add(q)
    out = {}
    for name in sorted(groups, key=lambda g: (len(g), g)):
        _, summary = summarise([r for r in records if r["q"] in groups[name]], metrics, len(rows), k)
        out[name] = {"n": len(groups[name]), "metrics": summary}
    return out


def evaluate_rows(
    agent: BaseAgent, env: Env, rows: list[dict[str, Any]], generator: Generator, k: int = 1, batch_questions: int = 64
) -> dict[str, Any]:
    """Roll out ``k`` samples of every row and score them; returns per-question scores, records, the summary and the
    answer retention (``report.retention``; None for agents that read no chunks)."""
    if k < 1:
        raise UserError(f"eval k must be >= 1, got {k}")
    metrics = env.metric_names(rows)
    pairs = [(q, s) for q in range(len(rows)) for s in range(k)]
    records = [r for batch in rollout_pairs(agent, env, rows, generator, pairs, metrics, batch_questions * k) for r in batch]
    per_question, summary = summarise(records, metrics, len(rows), k)
    out = {
        "n": len(rows), "k": k, "metrics": summary, "unscored": unscored(records, metrics), "per_question": per_question,
        "records": records, "retention": summarise_records(records),
    }
    if env.group_by:
        out["by_group"] = {"by": env.group_by, "groups": summarise_groups(records, rows, metrics, k, env.group_by)}
    return out


def paired_delta(before: list[dict[str, float]], after: list[dict[str, float]], metric: str) -> dict[str, float] | None:
    """The per-question paired difference after - before, with its standard error, over the questions that have the
    metric both times (RMM's recall is missing without gold evidence); None when none has."""
    diffs = [a[metric] - b[metric] for b, a in zip(before, after) if metric in a and metric in b]
    return mean_stderr(diffs) if diffs else None


def before_after(before: dict[str, Any], after: dict[str, Any], train_seconds: float) -> dict[str, Any]:
    """The ``eval_before_after.json`` of a training run: both summaries, the paired deltas, per group when grouped,
    and answer retention before and after when the agent records chunks."""
    deltas = {}
    for m in before["metrics"]:
        if m in after["metrics"] and (d := paired_delta(before["per_question"], after["per_question"], m)) is not None:
            deltas[m] = d
    summary = {"n": before["n"], "train_seconds": train_seconds, "before": before["metrics"], "after": after["metrics"], "delta": deltas}
    if before.get("unscored") or after.get("unscored"):  # rows without a score (no gold, no verdict), per metric
        summary["unscored"] = {"before": before.get("unscored", {}), "after": after.get("unscored", {})}
    if "by_group" in after:
        summary.update(before_by_group=before.get("by_group"), after_by_group=after["by_group"])
    if before.get("retention") or after.get("retention"):  # answer retention (report.retention) of both evals
        summary["retention"] = {"before": before.get("retention"), "after": after.get("retention")}
    return summary
