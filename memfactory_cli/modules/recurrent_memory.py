"""RecurrentMemoryModule: MemAgent's overwrite-memory loop over a long document, one chunk per turn.

Deviations from MemAgent and MemFactory, on purpose:
- an over-long document is cut to ``max_chunks * chunk_size`` tokens, never asserted on: with
  ``truncation: documents`` first by dropping whole distractor documents (``Document i:`` blocks, as MemFactory cut
  MemAgent's 200-document training contexts to 50-80), then, if still too long, centre-truncated (MemAgent's);
- ``max_memory_tokens`` caps every update turn (MemFactory had no memory budget);
- with ``enable_thinking`` the memory is the text after ``</think>``; a turn truncated inside its thinking keeps
  the previous memory (MemFactory kept the last 100 characters of the thoughts) and is marked truncated.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.modules.templates import TEMPLATES, TokenTemplate, final_messages, update_messages
from memfactory_cli.modules.text import stop_ids
from memfactory_cli.registry import register

INITIAL_MEMORY = "No previous memory"
TRUNCATIONS = ("centre", "documents")
DOCUMENT = re.compile(r"(?m)^Document \d+:\n")  # MemAgent's rendering: "Document {i}:\n{doc}", blank-line joined


@dataclass
class RecurrentMemoryConfig:
    chunk_size: int = 5000
    max_memory_tokens: int = 1024
    max_chunks: int = 8
    max_answer_tokens: int = 256
    enable_thinking: bool = False
    one_shot: str = "none"  # none | final | all: which turns get the worked example as an earlier chat turn
    template: str = "memagent"  # memagent (MemAgent's instruction texts) | compact (the CPU demo's short ones)
    truncation: str = "centre"  # centre | documents (drop whole distractor documents first, then centre)

    def __post_init__(self) -> None:
        if self.one_shot not in ("none", "final", "all"):
            raise UserError(f"agent.modules.memory.one_shot must be none, final or all, not '{self.one_shot}'")
        if self.template not in TEMPLATES:
            raise UserError(f"agent.modules.memory.template must be one of {', '.join(TEMPLATES)}, not '{self.template}'")
        if self.truncation not in TRUNCATIONS:
            raise UserError(f"agent.modules.memory.truncation must be one of {', '.join(TRUNCATIONS)}, not '{self.truncation}'")
        for name in ("chunk_size", "max_memory_tokens", "max_chunks", "max_answer_tokens"):
            if getattr(self, name) <= 0:
                raise UserError(f"agent.modules.memory.{name} must be positive, got {getattr(self, name)}")


def centre_truncate(ids: list[int], limit: int) -> list[int]:
    """Keep the first and last halves of an over-long sequence (MemAgent's centre truncation)."""
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head) :]


def _words(text: str) -> set[str]:
    return set(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def cut_documents(context: str, question: str, answers: list[str], limit: int, count: Any) -> str:
    """Drop whole documents from a ``Document i:`` context until it is about ``limit`` tokens; the rest keep their order.

    ``count(texts) -> token counts`` (one batched tokenizer call); the kept length is estimated as the sum of the
    documents' counts, so a few tokens of overshoot at the joins are left to the centre truncation that follows.
    MemAgent's files do not mark the gold paragraphs, so a document that contains a reference answer is kept, and
    the rest are dropped from the least to the most words shared with the question (the two gold paragraphs of a
    HotpotQA question are about entities the question names); ties drop the later document first. A context
    without document markers is returned unchanged.
    """
    starts = [m.start() for m in DOCUMENT.finditer(context)]
    if len(starts) < 2:
        return context
    head = context[: starts[0]]
    docs = [context[a:b].rstrip("\n") for a, b in zip(starts, starts[1:] + [len(context)])]
    lengths = count([head, *docs])
    total = sum(lengths)
    asked = _words(question)
    wanted = [a.lower() for a in answers if a.strip()]
    keep = [True] * len(docs)
    order = sorted(range(len(docs)), key=lambda i: (any(a in docs[i].lower() for a in wanted), len(asked & _words(docs[i])), -i))
    for i in order:
        if total <= limit or sum(keep) == 1:
            break
        keep[i] = False
        total -= lengths[i + 1]
    return head + "\n\n".join(d for d, k in zip(docs, keep) if k)


@register("recurrent_memory", "recurrent_memory")
class RecurrentMemoryModule:
    """Chunking, prompt building and memory parsing for one tokenizer; stateless across episodes."""

    Config = RecurrentMemoryConfig

    def __init__(self, tokenizer: Any, config: RecurrentMemoryConfig):
        self.tokenizer = tokenizer
        self.config = config
        chat_kwargs = {"enable_thinking": config.enable_thinking}
        self.update_template = TokenTemplate.compile(tokenizer, update_messages(config.one_shot == "all", config.template), chat_kwargs)
        self.final_template = TokenTemplate.compile(tokenizer, final_messages(config.one_shot != "none", config.template), chat_kwargs)
        self.initial_memory = self.encode(INITIAL_MEMORY)
        self._fitted: dict[tuple[Any, ...], str | None] = {}  # the last document cut (see fit_context)
        self.stop_ids = stop_ids(tokenizer)
        think_close = tokenizer.convert_tokens_to_ids("</think>")
        self.think_close_id = think_close if think_close not in (None, tokenizer.unk_token_id) else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def context_limit(self) -> int:
        return self.config.max_chunks * self.config.chunk_size

    def fit_context(self, context: str, question: str, answers: list[str]) -> str | None:
        """With ``truncation: documents``, ``context`` cut by whole documents to the token limit (None: unchanged)."""
        if self.config.truncation != "documents":
            return None
        key = (context, question, tuple(answers))
        if key not in self._fitted:  # TRL repeats each question G times in a row: cut it once
            count = lambda texts: [len(i) for i in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
            fitted = cut_documents(context, question, answers, self.context_limit, count)
            self._fitted = {key: fitted if fitted != context else None}
        return self._fitted[key]

    def chunks(self, context_ids: list[int]) -> list[list[int]]:
        c = self.config
        ids = centre_truncate(context_ids, c.max_chunks * c.chunk_size)
        return [ids[i : i + c.chunk_size] for i in range(0, len(ids), c.chunk_size)] or [[]]

    def update_prompt(self, question: list[int], memory: list[int], chunk: list[int]) -> list[int]:
        return self.update_template.build(question=question, memory=memory, chunk=chunk)

    def final_prompt(self, question: list[int], memory: list[int]) -> list[int]:
        return self.final_template.build(question=question, memory=memory)

    def finished(self, completion: list[int]) -> bool:
        """True when the turn ended by itself (EOS), False when it hit its token budget."""
        return bool(completion) and completion[-1] in self.stop_ids

    def next_memory(self, previous: list[int], completion: list[int]) -> list[int]:
        """The memory a completed update turn leaves behind (ids, without EOS)."""
        ids = list(completion)
        while ids and ids[-1] in self.stop_ids:
            ids.pop()
        if self.config.enable_thinking and self.think_close_id is not None:
            if self.think_close_id not in ids:
                return previous if "<think>" in self.tokenizer.decode(ids[:4]) else ids
            last = len(ids) - 1 - ids[::-1].index(self.think_close_id)
            return self.encode(self.tokenizer.decode(ids[last + 1 :]).strip())
        return ids
