"""Rewards of the MemFactory-style LLM reranker (``agent.reranker: llm``): format + accuracy + citation.

The rerank turn is what GRPO trains; the answer and its citations come from the same policy afterwards and reach
these functions through the trajectory extras ``rmm_rerank_ok``, ``rmm_answer`` and ``rmm_cited``. MemFactory's
recipe weights them 0.5 / 1.0 / 1.0. Unlike MemFactory, the citation count is read from one validated schema (the
agent's parser), and a missing field gives ``None`` (not scored), never a silent 0.
"""

from __future__ import annotations

from memfactory_cli.registry import register
from memfactory_cli.rewards.qa import score_text


@register("reward", "rmm_format")
def rmm_format_reward(prompts, completions, rmm_rerank_ok=None, **kwargs) -> list[float | None]:
    """1.0 when the rerank reply's first ``[...]`` (after thinking) holds 1..max distinct valid ids, else 0.0."""
    if rmm_rerank_ok is None:
        return [None] * len(completions)
    return [None if ok is None else float(ok) for ok in rmm_rerank_ok]


def _accuracy(rmm_answer, answers, metric: str) -> list[float | None]:
    if rmm_answer is None or answers is None:
        return [None] * len(rmm_answer or answers or [])
    return [None if a is None or not refs else score_text(metric, a, refs) for a, refs in zip(rmm_answer, answers)]


@register("reward", "rmm_accuracy")
def rmm_accuracy_reward(prompts, completions, rmm_answer=None, answers=None, metric: str = "em", **kwargs) -> list[float | None]:
    """The answer's score (``metric``: em | sub_em | f1) given the memories the rerank turn picked."""
    if rmm_answer is None:
        return [None] * len(completions)
    return _accuracy(rmm_answer, answers, metric)


@register("reward", "rmm_citation")
def rmm_citation_reward(
    prompts, completions, rmm_answer=None, rmm_cited=None, answers=None, metric: str = "em", per_citation: float = 0.125, **kwargs
) -> list[float | None]:
    """min(1, per_citation x picked memories the answer cited), only when the answer is correct (score 1)."""
    if rmm_answer is None or rmm_cited is None:
        return [None] * len(completions)
    out: list[float | None] = []
    for acc, cited in zip(_accuracy(rmm_answer, answers, metric), rmm_cited):
        out.append(None if acc is None or cited is None else (min(1.0, per_citation * cited) if acc >= 1.0 else 0.0))
    return out
