"""MultiSessionEnv: a question asked after a haystack of past chat sessions (RMM on LongMemEval, MSC, LoCoMo
question rows, synthetic).

Answer metrics are EM and F1 of the boxed answer. Retrieval metrics come from the agent's trajectory, which knows
what it retrieved: ``recall@k`` (gold evidence among the K retrieved) and ``recall@m`` (among the M kept by the
reranker), where gold evidence is the ``has_answer`` turns (``data/dialogues.py:gold_turns``).
"""

from __future__ import annotations

from typing import Any

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import dialogues
from memfactory_cli.data.sources import load_split
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register
from memfactory_cli.rewards.memory_r1 import gold
from memfactory_cli.rewards.qa import score_text

ANSWER_METRICS = ("em", "f1")
# LongMemEval's turn- and session-level recall_any / recall_all at the K retrieved and the M kept (agents/rmm.py)
RETRIEVAL_METRICS = tuple(
    f"{name}@{at}" for at in ("k", "m") for name in ("recall", "turn_recall_all", "session_recall_any", "session_recall_all")
)


@register("env", "multi_session")
class MultiSessionEnv:
    answers_parsed = False
    group_by = "question_type"  # evaluations also report every metric per LongMemEval question type

    def __init__(self, data: DataConfig):
        self.data = data

    def rows(self, split: str) -> list[dict[str, Any]]:
        rows = load_split(self.data, split)
        out = []
        for r in rows:
            if "sessions" not in r and isinstance(r.get("meta"), dict) and "turns" in r["meta"] and r["meta"].get("kind", "question") == "question":
                r = dialogues.validate(dialogues.from_conversation_row(r), f"data.{split}: row {r['id']}", 0)
            if "sessions" not in r:
                raise UserError(
                    f"env multi_session needs multi-session rows (LongMemEval, MSC, LoCoMo questions or rmm_synth_*); "
                    f"data.{split} row {r.get('id')} is not one"
                )
            out.append(r)
        return out

    def train_dataset(self, rows: list[dict[str, Any]]):
        """A ``datasets.Dataset`` for TRL: ``prompt`` plus the row, sessions kept as JSON text (a fixed column type)."""
        import json

        from datasets import Dataset

        return Dataset.from_list(
            [{**r, "sessions": json.dumps(r["sessions"]), "prompt": [{"role": "user", "content": r["question"]}]} for r in rows]
        )

    @staticmethod
    def metric_names(rows: list[dict[str, Any]]) -> tuple[str, ...]:
        return ANSWER_METRICS + RETRIEVAL_METRICS

    @staticmethod
    def score(answer: str, references: list[str], metrics: tuple[str, ...]) -> dict[str, float | None]:
        """Answer metrics of the boxed answer; ``None`` when the row has no gold answer to compare with."""
        refs = gold(references)
        return {name: score_text(name, answer, refs) if refs else None for name in metrics if name in ANSWER_METRICS}
