"""RecurrentMemoryModule: MemAgent's overwrite-memory loop over a long document, one chunk per turn.

Deviations from MemAgent and MemFactory, on purpose:
- an over-long document is centre-truncated to ``max_chunks * chunk_size`` tokens, never asserted on;
- ``max_memory_tokens`` caps every update turn (MemFactory had no memory budget);
- with ``enable_thinking`` the memory is the text after ``</think>``; a turn truncated inside its thinking keeps
  the previous memory (MemFactory kept the last 100 characters of the thoughts) and is marked truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.modules.templates import TokenTemplate, final_messages, update_messages
from memfactory_cli.modules.text import stop_ids
from memfactory_cli.registry import register

INITIAL_MEMORY = "No previous memory"


@dataclass
class RecurrentMemoryConfig:
    chunk_size: int = 5000
    max_memory_tokens: int = 1024
    max_chunks: int = 8
    max_answer_tokens: int = 256
    enable_thinking: bool = False
    one_shot: str = "none"  # none | final | all: which turns get the worked example as an earlier chat turn

    def __post_init__(self) -> None:
        if self.one_shot not in ("none", "final", "all"):
            raise UserError(f"agent.modules.memory.one_shot must be none, final or all, not '{self.one_shot}'")
        for name in ("chunk_size", "max_memory_tokens", "max_chunks", "max_answer_tokens"):
            if getattr(self, name) <= 0:
                raise UserError(f"agent.modules.memory.{name} must be positive, got {getattr(self, name)}")


def centre_truncate(ids: list[int], limit: int) -> list[int]:
    """Keep the first and last halves of an over-long sequence (MemAgent's centre truncation)."""
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head) :]


@register("recurrent_memory", "recurrent_memory")
class RecurrentMemoryModule:
    """Chunking, prompt building and memory parsing for one tokenizer; stateless across episodes."""

    Config = RecurrentMemoryConfig

    def __init__(self, tokenizer: Any, config: RecurrentMemoryConfig):
        self.tokenizer = tokenizer
        self.config = config
        chat_kwargs = {"enable_thinking": config.enable_thinking}
        self.update_template = TokenTemplate.compile(tokenizer, update_messages(config.one_shot == "all"), chat_kwargs)
        self.final_template = TokenTemplate.compile(tokenizer, final_messages(config.one_shot != "none"), chat_kwargs)
        self.initial_memory = self.encode(INITIAL_MEMORY)
        self.stop_ids = stop_ids(tokenizer)
        think_close = tokenizer.convert_tokens_to_ids("</think>")
        self.think_close_id = think_close if think_close not in (None, tokenizer.unk_token_id) else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

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
