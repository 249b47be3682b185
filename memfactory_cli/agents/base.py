"""Trajectories and turns: what every agent produces and every consumer (trainer, eval, infer) reads.

A *turn* is one generate call's prompt and completion, in token ids exactly as sampled. A *trajectory* is one
sampled attempt at one episode. The trainer turns every trainable turn into one training row and gives all rows of
a trajectory that trajectory's advantage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from memfactory_cli.generation.base import Generator


@dataclass
class Episode:
    """A canonical data row plus its token ids (question and document, no special tokens)."""

    row: dict[str, Any]
    question_ids: list[int]
    context_ids: list[int]

    @property
    def id(self) -> str:
        return self.row["id"]


@dataclass
class Turn:
    kind: str  # "memory_update" | "answer" | ...
    prompt_ids: list[int]
    completion_ids: list[int]
    finished: bool  # ended with EOS rather than at its token budget
    trainable: bool = True
    text: str = ""


@dataclass
class Trajectory:
    episode: Episode
    turns: list[Turn] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)  # the memory after each chunk
    chunks: list[str] = field(default_factory=list)  # the text each memory step read (report.retention pairs them)
    rewards: dict[str, float | None] = field(default_factory=dict)
    reward: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # per-trajectory fields handed to reward functions as kwargs

    @property
    def answer(self) -> str:
        return self.turns[-1].text if self.turns and self.turns[-1].kind == "answer" else ""

    @property
    def memory_within_budget(self) -> bool:
        return all(t.finished for t in self.turns if t.kind == "memory_update")

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready view: question, references, chunks read, memory trace, answer and rewards."""
        return {
            "id": self.episode.id,
            "question": self.episode.row["question"],
            "answers": self.episode.row["answers"],
            "chunks": self.chunks,
            "memories": self.memories,
            "answer": self.answer,
            "turns": len(self.turns),
            "memory_within_budget": self.memory_within_budget,
            "rewards": self.rewards,
            "reward": self.reward,
        }


class Agent(Protocol):
    """What trainer, eval and infer need from an agent; ``from_config(agent_cfg, tokenizer)`` builds one."""

    max_completion_tokens: int

    def episodes(self, rows: list[dict[str, Any]]) -> list[Episode]: ...

    def rollout(self, episodes: list[Episode], generator: Generator) -> list[Trajectory]: ...

    # Optional: ``rollout_metrics(trajectories) -> dict[str, float]``, logged by the trainer every step.
    # Optional, for `memfactory check`: ``check_budget(model_max_len, question_tokens=0) -> list[str]`` (one
    # problem per turn whose prompt + completion can exceed the model's context) and ``expected_rows(episode) -> int``
    # (training rows one trajectory gives, for the rows-per-step estimate).
