"""What trainer, check and eval need from an environment (``@register("env", name)``, built as ``cls(cfg.data)``)."""

from __future__ import annotations

from typing import Any, Protocol

from memfactory_cli.config.schema import DataConfig


class Env(Protocol):
    """A data source and its answer metrics: rows per split, the TRL dataset, and how an answer is scored."""

    group_by: str | None  # a row field (dotted path) every eval metric is also reported by; None: overall only
    answers_parsed: bool  # answers are plain text (Memory-R1's after **Answer:**), never \boxed{}: judges take them as they are

    def __init__(self, data: DataConfig) -> None: ...

    def rows(self, split: str) -> list[dict[str, Any]]:
        """Canonical rows of ``train`` or ``eval`` (``data.train`` / ``data.eval``)."""
        ...

    def train_dataset(self, rows: list[dict[str, Any]]) -> Any:
        """A ``datasets.Dataset`` for TRL: a ``prompt`` column plus every canonical column."""
        ...

    def metric_names(self, rows: list[dict[str, Any]]) -> tuple[str, ...]: ...

    def score(self, answer: str, references: list[str], metrics: tuple[str, ...]) -> dict[str, float]: ...
