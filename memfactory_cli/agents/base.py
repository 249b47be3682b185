"""The agent contract: :class:`BaseAgent`, and the episodes, turns and trajectories every agent produces.

A *turn* is one generate call's prompt and completion, in token ids exactly as sampled. A *trajectory* is one
sampled attempt at one episode. The trainer turns every trainable turn into one training row and gives all rows of
a trajectory that trajectory's advantage.

Everything the rest of the package asks of an agent is a method of :class:`BaseAgent`: the trainer, ``check``,
``eval``, ``infer`` and ``serve`` call nothing else, so an agent that subclasses it and fills :meth:`rollout` works
in every command (``docs/extending.md`` walks through one).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator
from memfactory_cli.registry import registry

Learner = Literal["grpo", "reinforce"]


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
    scores: dict[str, float | None] = field(default_factory=dict)  # metrics the agent measures itself (RMM's recall)

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




@dataclass
class Request:
    """One question about one text, as ``serve`` and ``infer`` receive it.

    ``document`` is everything the agent may remember. MemAgent reads it chunk by chunk; Memory-R1 and RMM read it
    as a conversation (:func:`conversation_turns`: ``Speaker: text`` lines, a blank line between sessions).
    """

    question: str
    document: str = ""
    references: list[str] = field(default_factory=list)


@dataclass
class Response:
    """An answer with its memory trace (MemAgent: the memory after each chunk; Memory-R1 and RMM: the memories the
    answer was given), whether the answer turn ended by itself, and the tokens it took (prompt, completion)."""

    answer: str
    trace: list[str]
    finished: bool
    usage: tuple[int, int]
    trajectory: Trajectory

    @classmethod
    def of(cls, trajectory: Trajectory) -> Response:
        turns = trajectory.turns
        usage = (sum(len(t.prompt_ids) for t in turns), sum(len(t.completion_ids) for t in turns))
        return cls(trajectory.answer, list(trajectory.memories), bool(turns) and turns[-1].finished, usage, trajectory)


def conversation_turns(document: str) -> list[dict[str, Any]]:
    """``Speaker: text`` lines -> LoCoMo-style turns; a blank line starts a new session, a line without a speaker is
    the user's."""
    turns: list[dict[str, Any]] = []
    for s, block in enumerate(b for b in document.split("\n\n") if b.strip()):
        for line in (x.strip() for x in block.splitlines()):
            if not line:
                continue
            speaker, sep, text = line.partition(":")
            if not sep or not speaker.strip() or len(speaker) > 40:
                speaker, text = "user", line
            j = sum(t["session"] == s + 1 for t in turns)
            turns.append({"speaker": speaker.strip(), "text": text.strip(), "session": s + 1, "timestamp": f"session {s + 1}", "dia_id": f"D{s + 1}:{j + 1}"})
    return turns


def build_module(family: str, spec: dict[str, Any], tokenizer: Any, where: str) -> Any:
    """Instantiate a registered module from its recipe spec ``{name: ..., **options}``; errors name ``where``."""
    options = dict(spec)
    name = options.pop("name", None)
    if not name:
        raise UserError(f"{where}.name is required (one of: {', '.join(registry(family).names())})")
    cls = registry(family).get(name)
    return cls(tokenizer, build_dataclass(cls.Config, options, where))


@dataclass
class NoOptions:
    """The options of an agent that takes none (``agent.options`` must then be empty)."""


class BaseAgent(ABC):
    """The whole agent contract. Subclasses declare, as class attributes:

    - ``name``: the registered name, used in messages;
    - ``slots``: module slot -> registry family, and ``defaults``: slot -> the module spec a recipe may leave out;
    - ``Config``: the dataclass of ``agent.options`` (built by ``build_dataclass``, so errors name the key typed);
    - ``settings``: the :class:`~memfactory_cli.config.schema.AgentConfig` fields besides ``modules``/``options``
      the agent reads (``train``, ``reranker``) -> their allowed values, the first being the default; any other
      such field set in a recipe is an error;
    - ``learner``: what trains the agent, ``grpo`` (the LLM, by ``MemGRPOTrainer``) or ``reinforce`` (the agent's
      own weights, by ``trainer/reinforce.py``); :meth:`learner_for` may choose by setting.

    and implement :meth:`rollout` and :attr:`max_completion_tokens`. Everything else has a neutral default.
    """

    name: ClassVar[str] = "agent"
    slots: ClassVar[dict[str, str]] = {}
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    Config: ClassVar[type] = NoOptions
    settings: ClassVar[dict[str, tuple[str, ...]]] = {}
    learner: ClassVar[Learner] = "grpo"
    trace_title: ClassVar[str] = "memory {i}/{n}"  # how ``infer`` titles entry i of n of a response's trace

    def __init__(self, tokenizer: Any, modules: dict[str, dict[str, Any]] | None = None, config: Any = None, **settings: str):
        modules = dict(modules or {})
        unknown = sorted(set(modules) - set(self.slots))
        if unknown:
            slots = ", ".join(self.slots) or "none"
            raise UserError(f"agent.modules.{unknown[0]}: {self.name} has no such slot; slots: {slots}")
        for key, value in settings.items():
            allowed = self.settings.get(key)
            if allowed is None:
                raise UserError(f"agent.{key}: {self.name} has no such setting")
            if value not in allowed:
                raise UserError(f"agent.{key} must be one of {', '.join(allowed)} for {self.name}, not '{value}'")
        self.tokenizer = tokenizer
        self.config = config if config is not None else self.Config()
        self.specs = {slot: {**self.defaults.get(slot, {}), **modules.get(slot, {})} for slot in self.slots}

    @classmethod
    def from_config(cls, agent_cfg: Any, tokenizer: Any) -> BaseAgent:
        """Build from the recipe's ``agent`` section: every unknown slot, setting or option is a clear error."""
        for key in ("train", "reranker"):
            if getattr(agent_cfg, key) and key not in cls.settings:
                raise UserError(f"agent.{key}: {cls.name} has no such setting")
        config = build_dataclass(cls.Config, dict(agent_cfg.options), "agent.options")
        settings = {key: getattr(agent_cfg, key) or allowed[0] for key, allowed in cls.settings.items()}
        return cls(tokenizer, agent_cfg.modules, config=config, **settings)

    @classmethod
    def learner_for(cls, agent_cfg: Any) -> Learner:
        """The learner for this recipe's settings (default: the class's ``learner``)."""
        return cls.learner

    def module(self, slot: str, tokenizer: Any = None) -> Any:
        """The module of ``slot`` built from its spec (for ``tokenizer``, default the policy's)."""
        return build_module(self.slots[slot], self.specs[slot], tokenizer or self.tokenizer, f"agent.modules.{slot}")

    # -- what every agent does ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def max_completion_tokens(self) -> int:
        """The longest completion any turn may generate (the trainer's ``max_completion_length``)."""

    @abstractmethod
    def rollout(self, episodes: list[Episode], generator: Generator) -> list[Trajectory]:
        """One trajectory per episode, in order; the last turn of each is the one the rewards score."""

    def episodes(self, rows: list[dict[str, Any]]) -> list[Episode]:
        """Rows -> episodes, the questions tokenised in one batch (agents that read a document override this)."""
        if not rows:
            return []
        ids = self.tokenizer([r["question"] for r in rows], add_special_tokens=False)["input_ids"]
        return [Episode(r, q, []) for r, q in zip(rows, ids)]

    def episode(self, row: dict[str, Any]) -> Episode:
        return self.episodes([row])[0]

    # -- answering one request (serve, infer) ---------------------------------------------------------------------
    def serve_problem(self) -> str | None:
        """Why this agent, as configured, cannot answer requests (``serve`` refuses to start); None when it can."""
        return None

    def request_row(self, request: Request) -> dict[str, Any]:
        """The data row for ``request``: a document (``context``) and, parsed from it, a conversation (``meta``),
        so one row serves the long-document and the conversational agents."""
        turns = conversation_turns(request.document)
        speakers = list(dict.fromkeys(t["speaker"] for t in turns))[:2]
        qa = {"question": request.question, "answers": list(request.references), "category": None, "evidence": []}
        # The conversation id names the text: an agent may cache what it built from a conversation by id.
        conversation = "request-" + hashlib.sha1(request.document.encode("utf-8")).hexdigest()[:16]
        meta = {"conversation": conversation, "speakers": speakers, "turns": turns, "turn_index": len(turns), "kind": "question", "qa": [qa]}
        return {"id": "request", "question": request.question, "context": request.document, "answers": qa["answers"], "meta": meta}

    def respond(self, request: Request, generator: Generator, max_answer_tokens: int | None = None, n: int = 1) -> list[Response]:
        """Answer ``request`` ``n`` times (one batched rollout), each with its memory trace."""
        with self.answer_budget(max_answer_tokens):
            trajectories = self.rollout(self.episodes([self.request_row(request)]) * n, generator)
        return [Response.of(t) for t in trajectories]

    def answer_settings(self) -> Any:
        """The options object holding ``max_answer_tokens`` and ``enable_thinking`` (default: ``self.config``)."""
        return self.config

    @contextmanager
    def answer_budget(self, tokens: int | None) -> Iterator[None]:
        """Cap the answer turn at ``tokens`` for the calls inside (None: the configured budget)."""
        settings = self.answer_settings()
        previous = settings.max_answer_tokens
        settings.max_answer_tokens = tokens or previous
        try:
            yield
        finally:
            settings.max_answer_tokens = previous

    # -- optional hooks, neutral by default -----------------------------------------------------------------------
    def rollout_metrics(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """Agent-specific means the trainer logs every step (e.g. operation rates)."""
        return {}

    def check_budget(self, model_max_len: int, question_tokens: int = 0) -> list[str]:
        """``memfactory check``: one problem per turn whose prompt + completion can exceed the model's context."""
        return []

    def expected_rows(self, episode: Episode) -> int | None:
        """``memfactory check``: training rows one trajectory of ``episode`` gives (None: unknown, at least 1)."""
        return None
