"""Batched avg@k evaluation: every question x k sample advances turn by turn together.

avg@k = the mean over questions of the mean over k samples; its standard error is taken over questions.
"""

from __future__ import annotations

import math
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator


def mean_stderr(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "stderr": math.sqrt(var / n)}


def evaluate_rows(
    agent: Any, env: Any, rows: list[dict[str, Any]], generator: Generator, k: int = 1, batch_questions: int = 64
) -> dict[str, Any]:
    """Roll out ``k`` samples of every row and score them; returns per-question scores, records and the summary."""
    if k < 1:
        raise UserError(f"eval k must be >= 1, got {k}")
    metrics = env.metric_names(rows)
    per_question: list[dict[str, float]] = []
    records: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_questions):
        episodes = agent.episodes(rows[start : start + batch_questions])
        repeated = [e for e in episodes for _ in range(k)]
        trajectories = agent.rollout(repeated, generator)
        for q, episode in enumerate(episodes):
            samples = trajectories[q * k : (q + 1) * k]
            scores = [env.score(t, metrics) for t in samples]
            per_question.append({m: sum(s[m] for s in scores) / k for m in metrics})
            for sample, (t, s) in enumerate(zip(samples, scores)):
                records.append({**t.to_record(), "sample": sample, "scores": s})
    summary = {m: mean_stderr([q[m] for q in per_question]) for m in metrics}
    return {"n": len(rows), "k": k, "metrics": summary, "per_question": per_question, "records": records}


def paired_delta(before: list[dict[str, float]], after: list[dict[str, float]], metric: str) -> dict[str, float]:
    """The per-question paired difference after - before, with its standard error."""
    return mean_stderr([a[metric] - b[metric] for a, b in zip(after, before)])
