"""The ``llm_judge`` reward and the eval-side helper built on the same judge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memfactory_cli.registry import register
from memfactory_cli.rewards.base import completion_text
from memfactory_cli.rewards.judge.core import JudgeConfig, JudgeReport, config_from, get_judge


@register("reward", "llm_judge")
def llm_judge_reward(
    prompts: list[Any],
    completions: list[Any],
    answers: list[list[str]] | None = None,
    question: list[str] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    *,
    backend: str = "openai",
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    template: str = "binary",
    match: str = "any",
    concurrency: int = 16,
    timeout_s: float = 60.0,
    max_retries: int = 3,
    backoff_s: float = 0.5,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    cache: bool = True,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 16,
    enable_thinking: bool = False,
    require_boxed: bool = True,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the judge says the boxed answer is correct against the references, 0.0 when it says wrong or there
    is no boxed answer, ``None`` when no verdict could be had.

    Options are the YAML ``args`` (see docs/judge.md). The question comes from the ``question`` column, or the
    prompt's last message when the dataset has none.
    """
    if answers is None:
        return [None] * len(completions)
    config = JudgeConfig(
        backend=backend, model=model, base_url=base_url, api_key_env=api_key_env, template=template, match=match,
        concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
        temperature=temperature, max_tokens=max_tokens, cache=cache, cache_dir=cache_dir, device=device,
        dtype=dtype, batch_size=batch_size, enable_thinking=enable_thinking,
    )
    questions = list(question) if question is not None else [completion_text(p) for p in prompts]
    scores, report = get_judge(config).score_completions(questions, answers, completions, require_boxed)
    if log_metric is not None:
        log_metric("judge/errors", float(report.errors))
        log_metric("judge/error_rate", report.error_rate)
        log_metric("judge/cache_hit_rate", report.cache_hits / report.asked if report.asked else 0.0)
    return scores


def judge_texts(
    texts: list[Any],
    references: list[list[str]],
    questions: list[str],
    require_boxed: bool = True,
    tasks: list[str | None] | None = None,
    **options: Any,
) -> tuple[list[float | None], JudgeReport, dict[str, Any]]:
    """For evaluation: scores, the batch report, and the judge's description for ``summary.json``. ``tasks``: each
    row's question type for a per-task template (``longmemeval``)."""
    judge = get_judge(config_from(options))
    scores, report = judge.score_completions(questions, references, texts, require_boxed, tasks)
    return scores, report, judge.describe()
