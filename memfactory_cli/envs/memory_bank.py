"""MemoryBankEnv: conversational memory episodes (LoCoMo, the synthetic dialogues) over an immutable memory bank.

The bank is a value: every operation returns a new bank and leaves the old one untouched, so a rollout can try G
different operation plans on copies of one state and a reward can compare them (MemFactory mutated one shared store).

Rows (see ``data/locomo.py``) are canonical QA rows whose ``meta`` holds the conversation: ``turns`` (every turn
``{dia_id, speaker, text, timestamp, session}``), ``turn_index`` (the state: turns before it are history),
``speakers``, ``qa`` (the questions asked at that state), ``kind`` (``turn``: a memory-manager decision on turn
``turn_index``; ``question``: one question after the whole conversation) and ``category``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data.sources import load_split
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register
from memfactory_cli.rewards.locomo import LOCOMO_METRICS
from memfactory_cli.rewards.memory_r1 import ANSWER_METRICS, answer_scores

EVENTS = ("ADD", "UPDATE", "DELETE", "NOOP")


@dataclass(frozen=True)
class MemoryEntry:
    id: str
    text: str
    speaker: str = ""
    timestamp: str = ""


@dataclass(frozen=True)
class Operation:
    """One memory operation. ``target`` is a bank id (UPDATE, DELETE, NOOP on an entry); ADD has none."""

    event: str
    target: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class MemoryBank:
    entries: tuple[MemoryEntry, ...] = ()
    next_id: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.entries]

    def get(self, entry_id: str) -> MemoryEntry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)

    def add(self, text: str, speaker: str = "", timestamp: str = "") -> MemoryBank:
        entry = MemoryEntry(str(self.next_id), text, speaker, timestamp)
        return MemoryBank((*self.entries, entry), self.next_id + 1)

    def update(self, entry_id: str, text: str, timestamp: str | None = None) -> MemoryBank:
        """Replace an entry's text in place (same id, same position); the timestamp moves to the new fact's."""
        self.get(entry_id)
        return replace(
            self,
            entries=tuple(
                replace(e, text=text, timestamp=e.timestamp if timestamp is None else timestamp) if e.id == entry_id else e
                for e in self.entries
            ),
        )

    def delete(self, entry_id: str) -> MemoryBank:
        self.get(entry_id)
        return replace(self, entries=tuple(e for e in self.entries if e.id != entry_id))

    def apply(self, ops: Iterable[Operation], speaker: str = "", timestamp: str = "") -> MemoryBank:
        """Apply a validated plan in order; ``speaker``/``timestamp`` describe the turn the facts came from.

        Unknown ids raise ``KeyError``: plans are validated before they get here (``modules/updater.py``).
        """
        bank = self
        for op in ops:
            if op.event == "ADD":
                bank = bank.add(op.text or "", speaker, timestamp)
            elif op.event == "UPDATE":
                bank = bank.update(op.target, op.text or "", timestamp)
            elif op.event == "DELETE":
                bank = bank.delete(op.target)
            elif op.event == "NOOP":
                if op.target is not None:
                    bank.get(op.target)
            else:
                raise ValueError(f"unknown memory operation {op.event!r}")
        return bank

    def of_speaker(self, speaker: str) -> list[MemoryEntry]:
        return [e for e in self.entries if e.speaker == speaker]

    def to_list(self) -> list[dict[str, str]]:
        return [{"id": e.id, "text": e.text, "speaker": e.speaker, "timestamp": e.timestamp} for e in self.entries]


def bank_from_facts(facts: Iterable[tuple[str, str, str]]) -> MemoryBank:
    """The bank that ADDs every ``(text, speaker, timestamp)`` fact in order (the fixed ``add_all`` manager)."""
    bank = MemoryBank()
    for text, speaker, timestamp in facts:
        bank = bank.add(text, speaker, timestamp)
    return bank


def row_kind(row: dict[str, Any]) -> str:
    meta = row.get("meta")
    if not isinstance(meta, dict) or "turns" not in meta or "qa" not in meta:
        raise UserError(
            f"row {row.get('id')}: not a conversational memory row (no meta.turns / meta.qa); "
            "use a memory-bank set such as locomo_train or synth_dialogue_train"
        )
    return meta.get("kind", "question")


@register("env", "memory_bank")
class MemoryBankEnv:
    """Conversation QA rows for the Memory-R1 (and RMM) agents; answers are scored by EM, F1 and BLEU-1."""

    group_by = "meta.category"  # `memfactory eval` also reports every metric per LoCoMo category
    answers_parsed = True  # trajectories carry the parsed final answer (no \boxed{}): the judge takes it as it is
    # what each metric is, written into summary.json beside the numbers
    metric_definitions = {
        "em": "exact match after SQuAD normalisation (rewards/qa.py)",
        "f1": "SQuAD-style token F1, no stemming",
        "bleu1": "unigram BLEU over SQuAD-normalised tokens",
        "locomo_f1": "LoCoMo task_eval/evaluation.py F1: its normalisation, Porter stemming, category 1 split on ',', "
        "category 3 gold up to ';'",
        "locomo_bleu1": "unigram BLEU over LoCoMo-normalised, Porter-stemmed tokens (LoCoMo's evaluation has no BLEU)",
    }

    def __init__(self, data: DataConfig):
        self.data = data

    def rows(self, split: str) -> list[dict[str, Any]]:
        rows = load_split(self.data, split)
        for r in rows:
            row_kind(r)
        return rows

    def train_dataset(self, rows: list[dict[str, Any]]):
        from datasets import Dataset

        return Dataset.from_list([{**r, "prompt": [{"role": "user", "content": r["question"]}]} for r in rows])

    @staticmethod
    def metric_names(rows: list[dict[str, Any]]) -> tuple[str, ...]:
        """SQuAD-style scores from :meth:`score`, LoCoMo's own from the agent's trajectory (they need the category)."""
        return ANSWER_METRICS + LOCOMO_METRICS

    @staticmethod
    def score(answer: str, references: list[str], metrics: tuple[str, ...]) -> dict[str, float]:
        """``answer`` is already the parsed final answer (the Memory-R1 agent strips its distilled memories)."""
        scores = answer_scores(answer, references)
        return {m: scores[m] for m in metrics if m in scores}
