"""Fact extractors: the facts a dialogue turn contributes to memory.

- ``llm``: an LLM lists the facts of the turn as JSON (Mem0 / Memory-R1 style); a reply that is not a JSON list of
  strings falls back to the turn itself, so a weak extractor never loses a turn.
- ``passthrough``: the turn itself is the one fact (``"<speaker>: <text>"``); no model call. For CPU recipes and as a
  baseline: the memory manager then decides over raw turns.

Both take ``(tokenizer, config)`` and answer ``prompts(turns)`` / ``parse(text, turn)``; ``needs_model`` says whether
the prompts must be generated at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from memfactory_cli.modules.text import after_thinking, chat_ids
from memfactory_cli.registry import register

EXTRACT_PROMPT = """You extract personal facts from one turn of a conversation, for a long-term memory.
Write each fact as a short standalone sentence that names the speaker (never "I" or "you"), and turn relative dates
into absolute ones using the turn's timestamp. Ignore greetings and small talk.
Reply with JSON only: {{"facts": ["...", "..."]}} (an empty list when there is nothing worth remembering).

Timestamp: {timestamp}
{speaker}: {text}"""


def strip_reply(text: str) -> str:
    """The reply without thinking and without a Markdown code fence around it."""
    text = after_thinking(text)
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def turn_fact(turn: dict[str, Any]) -> str:
    return f"{turn['speaker']}: {turn['text']}"


@register("extractor", "passthrough")
class PassthroughExtractor:
    @dataclass
    class Config:
        pass

    needs_model = False

    def __init__(self, tokenizer: Any = None, config: Config | None = None):
        self.config = config or self.Config()

    def prompts(self, turns: list[dict[str, Any]]) -> list[list[int]]:
        return [[] for _ in turns]

    def parse(self, text: str, turn: dict[str, Any]) -> list[str]:
        return [turn_fact(turn)]


@register("extractor", "llm")
class LLMExtractor:
    @dataclass
    class Config:
        max_new_tokens: int = 128
        max_facts: int = 8
        enable_thinking: bool = False

    needs_model = True

    def __init__(self, tokenizer: Any, config: Config | None = None):
        self.tokenizer = tokenizer
        self.config = config or self.Config()

    def prompts(self, turns: list[dict[str, Any]]) -> list[list[int]]:
        return [chat_ids(self.tokenizer, EXTRACT_PROMPT.format(**t), self.config.enable_thinking) for t in turns]

    def parse(self, text: str, turn: dict[str, Any]) -> list[str]:
        try:
            data = json.loads(strip_reply(text))
        except json.JSONDecodeError:
            return [turn_fact(turn)]
        facts = data.get("facts") if isinstance(data, dict) else data
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            return [turn_fact(turn)]
        return [f.strip() for f in facts if f.strip()][: self.config.max_facts]
