"""The memory manager's prompt and its typed operation parser (Memory-R1 / Mem0 operation set).

The manager sees the retrieved old memories under *local* ids ``"0".."k-1"`` (Mem0 maps bank ids the same way, so a
model never has to copy long ids) and the new facts, and replies
``{"memory": [{"id": "1", "event": "UPDATE", "text": "..."}, {"event": "ADD", "text": "..."}, ...]}`` with events
ADD, UPDATE, DELETE or NONE (NOOP is accepted too). Memories it does not mention stay as they are.

``parse`` is strict and never raises: any malformed JSON, missing or wrongly typed field, unknown event, unknown id
or two operations on one id makes the whole plan invalid (``Plan.valid`` False, no operations), which the format
reward scores 0 and the agent applies as "no change". A partial plan is never applied: its outcome would reward a
reply the parser had to second-guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from memfactory_cli.modules.extractor import strip_reply
from memfactory_cli.modules.text import chat_ids
from memfactory_cli.registry import register

MANAGER_PROMPT = """You are a smart memory manager. You control the long-term memory of a conversation between {speakers}.
Compare the new facts with the old memories and decide for each fact:
- ADD: the fact is new information; write it as a new memory.
- UPDATE: the fact is about the same thing as an old memory but different or richer; give that memory's id and the
  merged text, keeping the more detailed version. Same meaning means no update.
- DELETE: the fact contradicts an old memory; give that memory's id.
- NONE: the fact is already in memory or not worth remembering.
Reply with JSON only, in this form:
{{"memory": [{{"id": "0", "event": "UPDATE", "text": "merged memory"}}, {{"event": "ADD", "text": "new memory"}}]}}

Old memories:
{old}

New facts (said by {speaker} on {timestamp}):
{facts}"""

EVENTS = {"ADD": "ADD", "UPDATE": "UPDATE", "DELETE": "DELETE", "NONE": "NOOP", "NOOP": "NOOP"}


@dataclass(frozen=True)
class LocalOp:
    """One parsed operation; ``index`` points into the old memories shown to the manager."""

    event: str  # ADD | UPDATE | DELETE | NOOP
    index: int | None = None
    text: str | None = None


@dataclass
class Plan:
    ops: list[LocalOp] = field(default_factory=list)
    valid: bool = True
    error: str = ""


def _invalid(error: str) -> Plan:
    return Plan([], False, error)


def parse_plan(text: str, n_old: int) -> Plan:
    """Parse and type-check a manager reply against ``n_old`` shown memories; never raises."""
    try:
        data = json.loads(strip_reply(text))
    except json.JSONDecodeError as exc:
        return _invalid(f"not JSON: {exc.msg}")
    if not isinstance(data, dict) or not isinstance(data.get("memory"), list):
        return _invalid('expected an object with a "memory" list')
    ops: list[LocalOp] = []
    seen: set[int] = set()
    for i, item in enumerate(data["memory"]):
        if not isinstance(item, dict):
            return _invalid(f"memory[{i}] is not an object")
        event = item.get("event")
        if not isinstance(event, str) or event.upper() not in EVENTS:
            return _invalid(f"memory[{i}].event must be ADD, UPDATE, DELETE or NONE")
        event = EVENTS[event.upper()]
        body = item.get("text")
        if event in ("ADD", "UPDATE") and (not isinstance(body, str) or not body.strip()):
            return _invalid(f"memory[{i}].text must be non-empty text for {event}")
        if body is not None and not isinstance(body, str):
            return _invalid(f"memory[{i}].text must be text")
        index = None
        if event != "ADD":
            raw = item.get("id")
            if event == "NOOP" and raw is None:
                ops.append(LocalOp("NOOP"))
                continue
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip().isdigit():
                return _invalid(f"memory[{i}].id must be one of the old memory ids")
            index = int(str(raw).strip())
            if index >= n_old:
                return _invalid(f"memory[{i}].id {index} is not an old memory id")
            if index in seen:
                return _invalid(f"memory[{i}].id {index} has two operations")
            seen.add(index)
        ops.append(LocalOp(event, index, body.strip() if isinstance(body, str) and event in ("ADD", "UPDATE") else None))
    return Plan(ops)


@register("updater", "memory_manager")
class MemoryManagerUpdater:
    @dataclass
    class Config:
        max_new_tokens: int = 256
        top_k: int = 10  # old memories retrieved for the new facts and shown to the manager
        enable_thinking: bool = False

    def __init__(self, tokenizer: Any, config: Config | None = None):
        self.tokenizer = tokenizer
        self.config = config or self.Config()

    def prompt(self, facts: list[str], old: list[str], speakers: list[str], speaker: str, timestamp: str) -> list[int]:
        text = MANAGER_PROMPT.format(
            speakers=" and ".join(speakers),
            old=json.dumps([{"id": str(i), "text": t} for i, t in enumerate(old)], ensure_ascii=False),
            facts=json.dumps(facts, ensure_ascii=False),
            speaker=speaker,
            timestamp=timestamp,
        )
        return chat_ids(self.tokenizer, text, self.config.enable_thinking)

    @staticmethod
    def parse(text: str, n_old: int) -> Plan:
        return parse_plan(text, n_old)
