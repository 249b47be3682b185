"""RMM's topic memory bank and the text protocols around it: prospective reflection and citations.

- **Extraction** (prospective reflection, one prompt per speaker): a finished session becomes that speaker's topic
  summaries, each with the ids of the turns it came from, as ``{"extracted_memories": [{"summary", "reference"}]}``,
  or ``NO_TRAIT`` when nothing is worth keeping.
- **Update**: for each new summary the LLM sees the top-K most similar bank entries (numbered from 0) and answers
  ``Add()`` or one or more ``Merge(index, merged summary)``.
- **Citations**: after answering, the LLM lists the memories it used as ``[i, j]`` (0-based over the M shown) or
  ``[NO_CITE]``. Every such group in the reply counts, not only the first; ids outside 0..M-1 are dropped and counted.

Parsers never raise on model output: a malformed reply is reported (``ok=False``) and counted by the agent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.modules.text import after_thinking

NO_TRAIT = "NO_TRAIT"
NO_CITE = "NO_CITE"

EXTRACT_INSTRUCTION = (
    "Read the dialogue session below and write what it reveals about {speaker} as topic-based summaries: one "
    "summary per topic (a preference, a fact, an event, a plan), each with the ids of the turns it comes from. "
    'Reply with JSON only: {"extracted_memories": [{"summary": "...", "reference": [turn ids]}]}. If the session '
    "says nothing worth remembering about {speaker}, reply NO_TRAIT."
)
EXTRACT_BODY = "\n\nSession (date {date}):\n{session}\n\nMemories about {speaker}:"

UPDATE_INSTRUCTION = (
    "You maintain a memory bank of topic summaries. Given a new summary and the most similar existing entries "
    "(numbered from 0), decide: reply Add() to store the new summary as a new entry, or Merge(index, merged summary) "
    "to rewrite entry <index> so that it also holds the new information. Several Merge(...) lines are allowed."
)
UPDATE_BODY = "\n\nNew summary: {summary}\n\nExisting entries:\n{entries}\n\nDecision:"

ANSWER_INSTRUCTION = (
    "Answer the question using the memories below, in one to five words inside \\boxed{}. Then list the ids of the "
    "memories you used, like [0, 2], or write [NO_CITE] if none of them helped."
)
ANSWER_BODY = "\n\nMemories:\n{memories}\n\nQuestion ({date}): {question}\n\nAnswer:"

RERANK_INSTRUCTION = (
    "Pick the memories that help answer the question: reply with a JSON list of at most {max_ids} ids from the "
    "list below, most useful first, e.g. [3, 12]."
)
RERANK_BODY = "\n\nQuestion: {question}\n\nMemories:\n{memories}\n\nSelected ids:"


@dataclass
class MemoryEntry:
    """One bank entry: a topic summary, the turns it came from, its session, a timestamp and its embedding.

    ``order`` is the session's position in the haystack: what "newer" means. Timestamps are display text (LoCoMo's
    "1:56 pm on 8 May, 2023", MSC's "3 days before"), which does not sort as strings.
    """

    summary: str
    refs: list[str]  # turn ids, "<session id>:<turn index>"
    session_id: str
    timestamp: str
    embedding: Any = None  # 1-D tensor from the frozen embedder
    order: int = 0

    def to_record(self) -> dict[str, Any]:
        return {"summary": self.summary, "refs": self.refs, "session_id": self.session_id, "timestamp": self.timestamp, "order": self.order}


@dataclass
class TopicBank:
    """The memory bank of one episode. Every entry must carry an embedding: a missing one is an error, never a
    silently bypassed reranker (a known defect of a public RMM port)."""

    entries: list[MemoryEntry] = field(default_factory=list)

    def matrix(self) -> Any:
        import torch

        missing = [i for i, e in enumerate(self.entries) if e.embedding is None]
        if missing:
            raise ValueError(f"memory bank entries {missing[:5]} have no embedding")
        if not self.entries:
            return torch.zeros(0, 0)
        return torch.stack([e.embedding for e in self.entries])

    def texts(self) -> list[str]:
        return [e.summary for e in self.entries]


@dataclass
class Extracted:
    summary: str
    reference: list[int]


@dataclass
class Parsed:
    """A parser's verdict: what it understood, and whether the reply followed the protocol."""

    value: Any
    ok: bool
    dropped: int = 0  # e.g. out-of-range ids ignored


def _json_object(text: str) -> Any:
    """The first JSON object in ``text`` (code fences and prose around it tolerated), or None."""
    start = text.find("{")
    while start >= 0:
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def parse_extraction(text: str, n_turns: int) -> Parsed:
    """``NO_TRAIT`` -> ok with no memories; valid JSON -> its summaries (references outside the session dropped)."""
    body = after_thinking(text)
    obj = _json_object(body)
    if obj is None:
        return Parsed([], ok=NO_TRAIT in body)
    items = obj.get("extracted_memories") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        return Parsed([], ok=False)
    out, dropped, ok = [], 0, True
    for item in items:
        summary = item.get("summary") if isinstance(item, dict) else None
        if not isinstance(summary, str) or not summary.strip():
            ok = False
            continue
        refs = item.get("reference", [])
        refs = refs if isinstance(refs, list) else [refs]
        good = sorted({r for r in refs if isinstance(r, int) and not isinstance(r, bool) and 0 <= r < n_turns})
        dropped += len(refs) - len(good)
        out.append(Extracted(summary.strip(), good))
    return Parsed(out, ok=ok, dropped=dropped)


@dataclass
class Add:
    pass


@dataclass
class Merge:
    index: int
    summary: str


_ADD = re.compile(r"\bAdd\(\s*\)")
_MERGE = re.compile(r"\bMerge\(\s*(-?\d+)\s*,\s*(.*?)\)\s*(?=$|\n|Merge\(|Add\()", re.S)


def parse_update(text: str, n_candidates: int) -> Parsed:
    """``Add()`` or ``Merge(index, merged)`` lines -> actions. Merges into unknown indices are dropped and counted;
    a reply with no valid action is not ok (the agent then adds the summary, so nothing is lost)."""
    body = after_thinking(text)
    actions: list[Add | Merge] = []
    dropped = 0
    for m in _MERGE.finditer(body):
        index, merged = int(m.group(1)), m.group(2).strip().strip("\"'").strip()
        if 0 <= index < n_candidates and merged:
            actions.append(Merge(index, merged))
        else:
            dropped += 1
    if not actions and _ADD.search(body):
        actions.append(Add())
    return Parsed(actions, ok=bool(actions), dropped=dropped)


def apply_update(
    bank: TopicBank, new: MemoryEntry, candidates: list[int], parsed: Parsed, embed: Any
) -> list[int]:
    """Apply one update decision to ``bank`` in place; returns the indices of the bank entries written.

    ``candidates`` maps the prompt's 0-based indices to bank positions. A merge rewrites that entry's summary,
    unions the turn references, takes the timestamp and session of the later session in haystack order (``order``,
    never a string comparison of timestamps) and re-embeds it. ``Add()``, or a reply with no valid
    action, appends ``new``. Several merges into the same entry apply in order.
    """
    merges = [a for a in parsed.value if isinstance(a, Merge)] if parsed.ok else []
    if not merges:
        if new.embedding is None:
            new.embedding = embed([new.summary])[0]
        bank.entries.append(new)
        return [len(bank.entries) - 1]
    written = []
    for action in merges:
        entry = bank.entries[candidates[action.index]]
        entry.summary = action.summary
        entry.refs = sorted(set(entry.refs) | set(new.refs))
        if new.order >= entry.order:
            entry.timestamp, entry.session_id, entry.order = new.timestamp, new.session_id, new.order
        written.append(candidates[action.index])
    vectors = embed([bank.entries[i].summary for i in written])
    for i, vector in zip(written, vectors):
        bank.entries[i].embedding = vector
    return written


_GROUP = re.compile(r"\[([^\[\]]*)\]")
_ID_LIST = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*,?\s*$")


def parse_citations(text: str, m: int) -> Parsed:
    """Every ``[i, j, ...]`` group and ``[NO_CITE]`` in the reply (after thinking).

    Returns the sorted set of cited ids in 0..m-1; ``ok`` is False when the reply has no citation group at all
    (no signal: the reranker is not updated), ``dropped`` counts out-of-range ids. ``[NO_CITE]`` with no ids cites
    nothing (every shown memory then gets -1). Groups that are not id lists (``[sic]``) are ignored.
    """
    body = after_thinking(text)
    cited: set[int] = set()
    found = dropped = 0
    for g in _GROUP.finditer(body):
        content = g.group(1).strip()
        if content.upper() == NO_CITE:
            found += 1
        elif _ID_LIST.match(content):
            found += 1
            for part in content.split(","):
                if part.strip():
                    i = int(part)
                    if 0 <= i < m:
                        cited.add(i)
                    else:
                        dropped += 1
    return Parsed(sorted(cited), ok=found > 0, dropped=dropped)


def parse_rerank_ids(text: str, allowed: int, max_ids: int) -> Parsed:
    """The MemFactory-style LLM reranker's reply: the first ``[...]`` after thinking, 1..max_ids distinct integer
    ids in 0..allowed-1. ``ok`` is the format verdict; the kept ids are the valid ones in their order."""
    body = after_thinking(text)
    g = _GROUP.search(body)
    if g is None or not _ID_LIST.match(g.group(1)):
        return Parsed([], ok=False)
    ids = [int(p) for p in g.group(1).split(",") if p.strip()]
    valid = list(dict.fromkeys(i for i in ids if 0 <= i < allowed))
    ok = 1 <= len(ids) <= max_ids and len(valid) == len(ids)
    return Parsed(valid[:max_ids], ok=ok, dropped=len(ids) - len(valid))


def check_positive(where: str, **values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UserError(f"{where}.{name} must be positive, got {value}")
