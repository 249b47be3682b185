"""LongcontextEnv: long-document QA episodes (MemAgent / RULER files, hub ids, the synthetic set)."""

from __future__ import annotations

from typing import Any

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data.sources import load_split
from memfactory_cli.registry import register
from memfactory_cli.rewards.qa import score_text

QA_METRICS = ("em", "sub_em", "f1")
RULER_METRICS = ("string_match_all",)


@register("env", "longcontext")
class LongcontextEnv:
    group_by = None
    answers_parsed = False

    def __init__(self, data: DataConfig):
        self.data = data

    def rows(self, split: str) -> list[dict[str, Any]]:
        return load_split(self.data, split)

    def train_dataset(self, rows: list[dict[str, Any]]):
        """A ``datasets.Dataset`` for TRL: ``prompt`` (the question as a chat) plus every canonical column."""
        from datasets import Dataset

        return Dataset.from_list([{**r, "prompt": [{"role": "user", "content": r["question"]}]} for r in rows])

    @staticmethod
    def metric_names(rows: list[dict[str, Any]]) -> tuple[str, ...]:
        return RULER_METRICS if any("answer_prefix" in r for r in rows) else QA_METRICS

    @staticmethod
    def score(answer: str, references: list[str], metrics: tuple[str, ...]) -> dict[str, float]:
        return {name: score_text(name, answer, references) for name in metrics}
