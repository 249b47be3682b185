"""LoCoMo (``locomo10.json``) and a seeded synthetic look-alike, as conversational memory rows.

Input, LoCoMo's published schema: a list of conversations ``{sample_id, conversation: {speaker_a, speaker_b,
session_N: [{speaker, dia_id, text, blip_caption?}], session_N_date_time}, qa: [{question, answer, evidence,
category}]}``. Category 5 (adversarial, ``adversarial_answer`` instead of ``answer``) is dropped; integer answers
become strings; evidence ids are read leniently (LoCoMo has a few like ``"D10:19; D4:5"``).

Split, by conversation as in Memory-R1: conversation 1 train, 2 validation, 3-10 test.

Two row kinds, both canonical rows (``id, question, context="", answers``) with the conversation under ``meta``:

- ``question`` rows (``locomo_{train,val,test}``, ``synth_dialogue_{train,eval}``): one question asked after the
  whole conversation (``turn_index = len(turns)``); answer-agent training and ``memfactory eval``.
- ``turn`` rows (``locomo_turns_{train,val}``, ``synth_dialogue_turns_train``): the memory-manager state at turn t,
  the turn where a question's last evidence occurs, with every question linked to it in ``meta.qa``.

All rows of one conversation share one ``turns`` list, so a 600-turn conversation is held once in memory.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import synth
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register

SPLITS = {"train": slice(0, 1), "val": slice(1, 2), "test": slice(2, 10)}
_SESSION = re.compile(r"session_(\d+)")
_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")  # LoCoMo also writes "D30:05" and "D:11:26"


def read_locomo(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(
            f"LoCoMo file not found: {p}; download locomo10.json from github.com/snap-research/LoCoMo (data/) and set "
            "data.locomo_path to it"
        )
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{p}: not a LoCoMo JSON file ({exc})") from None
    if not isinstance(raw, list) or not all(isinstance(c, dict) and "conversation" in c for c in raw):
        raise UserError(f"{p}: expected a JSON list of conversations with a 'conversation' field (locomo10.json)")
    return raw


def _turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    return f"{text} [shares {caption}]" if caption else text


def convert(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LoCoMo conversations -> ``{id, speakers, turns, qa}`` with ordered turns and cleaned, non-adversarial QA."""
    out = []
    for n, item in enumerate(raw):
        conv = item["conversation"]
        cid = str(item.get("sample_id", f"conv-{n + 1}"))
        speakers = [str(conv.get("speaker_a", "")), str(conv.get("speaker_b", ""))]
        sessions = sorted(int(m.group(1)) for k in conv if (m := _SESSION.fullmatch(k)) and isinstance(conv[k], list))
        turns = []
        for s in sessions:
            stamp = str(conv.get(f"session_{s}_date_time", ""))
            for t in conv[f"session_{s}"]:
                turns.append({"dia_id": str(t.get("dia_id", "")), "speaker": str(t.get("speaker", "")), "text": _turn_text(t), "timestamp": stamp, "session": s})
        qa = []
        for q in item.get("qa", []):
            category = int(q.get("category", 0))
            if category == 5 or "answer" not in q or q["answer"] is None:
                continue
            evidence = q.get("evidence") or []
            evidence = [evidence] if isinstance(evidence, str) else evidence
            ids = [f"D{int(a)}:{int(b)}" for e in evidence for a, b in _EVIDENCE.findall(str(e))]
            qa.append({"question": str(q["question"]), "answers": [str(q["answer"])], "category": category, "evidence": ids})
        out.append({"id": cid, "speakers": speakers, "turns": turns, "qa": qa})
    return out


def _meta(conv: dict[str, Any], kind: str, turn_index: int, qa: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "conversation": conv["id"],
        "speakers": conv["speakers"],
        "turns": conv["turns"],
        "turn_index": turn_index,
        "kind": kind,
        "qa": qa,
        "category": qa[0]["category"],
    }


def question_rows(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"index": f"{c['id']}:q{i}", "input": q["question"], "context": "", "answers": q["answers"], "meta": _meta(c, "question", len(c["turns"]), [q])}
        for c in convs
        for i, q in enumerate(c["qa"])
    ]


def turn_rows(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per turn that is the last evidence of at least one question; questions without evidence are skipped."""
    rows = []
    for c in convs:
        position = {t["dia_id"]: i for i, t in enumerate(c["turns"])}
        linked: dict[int, list[dict[str, Any]]] = {}
        for q in c["qa"]:
            found = [position[e] for e in q["evidence"] if e in position]
            if found:
                linked.setdefault(max(found), []).append(q)
        for t in sorted(linked):
            qa = linked[t]
            rows.append({"index": f"{c['id']}:t{t}", "input": qa[0]["question"], "context": "", "answers": qa[0]["answers"], "meta": _meta(c, "turn", t, qa)})
    return rows


def locomo_split(path: str, split: str) -> list[dict[str, Any]]:
    return convert(read_locomo(path))[SPLITS[split]]


# -- synthetic dialogues ----------------------------------------------------------------------------------------

FACTS = {
    "city": ("I live in {v} now.", "I moved again, these days I live in {v}.", "Which city does {p} live in?", synth.CITIES),
    "pet": ("I adopted a {v} last week.", "Sadly my old pet is gone, now I have a {v}.", "What pet does {p} have?", synth.PETS),
    "job": ("I started working as a {v}.", "I changed careers, I work as a {v} now.", "What is the job of {p}?", synth.JOBS),
    "colour": ("My favourite colour is {v}.", "Funny, my favourite colour changed to {v}.", "What is the favourite colour of {p}?", synth.COLOURS),
}
FILLER = [
    "How was your weekend?",
    "It was lovely, thanks for asking!",
    "Did you see the game last night?",
    "Not really, I was busy with chores.",
    "That sounds like a lot of fun.",
    "I have been reading a great book lately.",
    "We should grab coffee sometime.",
    "The weather has been so nice recently.",
]
MONTHS = "January February March April May June July August September October November December".split()


@dataclass
class ConversationSynthConfig:
    """Options of the synthetic two-person conversation generator (recipes set them under ``data.synth``)."""

    n_train: int = 8
    n_eval: int = 4
    sessions: int = 3
    filler_per_session: int = 4
    facts_per_speaker: int = 2
    change_fraction: float = 0.5  # share of facts restated with a new value in a later session (category 1)

    def __post_init__(self) -> None:
        if self.sessions < 2 or not 1 <= self.facts_per_speaker <= len(FACTS) or self.n_train < 0 or self.n_eval < 0:
            raise UserError(f"data.synth: sessions must be >= 2 and facts_per_speaker in 1..{len(FACTS)}")


def _conversation(rng: random.Random, cfg: ConversationSynthConfig, pool: list[str], n: int) -> dict[str, Any]:
    """One conversation in LoCoMo's raw schema: facts said in session 1 or 2, some restated with a new value later."""
    speakers = rng.sample(pool, 2)
    sessions: list[list[tuple[str, str]]] = [[] for _ in range(cfg.sessions)]
    for s in range(cfg.sessions):
        sessions[s] = [("", rng.choice(FILLER)) for _ in range(cfg.filler_per_session)]
    qa = []
    plans = []
    for who in speakers:
        for rel in rng.sample(list(FACTS), cfg.facts_per_speaker):
            said, changed, question, values = FACTS[rel]
            first, second = rng.sample(values, 2)
            s1 = rng.randrange(cfg.sessions - 1)
            change = rng.random() < cfg.change_fraction
            s2 = rng.randrange(s1 + 1, cfg.sessions) if change else None
            plans.append((who, said.format(v=first), s1, changed.format(v=second) if change else None, s2))
            qa.append((question.format(p=who), second if change else first, 1 if change else 4))
    slots: list[list[tuple[int, str, str]]] = []
    for who, first_text, s1, second_text, s2 in plans:
        marks = []
        for s, text in ((s1, first_text), (s2, second_text)):
            if text is not None:
                pos = rng.randrange(len(sessions[s]) + 1)
                sessions[s].insert(pos, (who, text))
                marks.append((s, who, text))
        slots.append(marks)
    conversation: dict[str, Any] = {"speaker_a": speakers[0], "speaker_b": speakers[1]}
    evidence_of: dict[tuple[int, str, str], str] = {}
    for s, turns in enumerate(sessions):
        conversation[f"session_{s + 1}_date_time"] = f"{rng.randrange(1, 12)}:00 pm on {3 * s + 1} {MONTHS[n % 12]}, 2023"
        rendered = []
        for i, (who, text) in enumerate(turns):
            speaker = who or speakers[i % 2]
            dia = f"D{s + 1}:{i + 1}"
            rendered.append({"speaker": speaker, "dia_id": dia, "text": text})
            evidence_of[(s, who, text)] = dia
        conversation[f"session_{s + 1}"] = rendered
    items = [
        {"question": q, "answer": a, "evidence": [evidence_of[m] for m in marks], "category": c}
        for (q, a, c), marks in zip(qa, slots)
    ]
    return {"sample_id": f"synth-{n}", "conversation": conversation, "qa": items}


def synth_conversations(cfg: ConversationSynthConfig, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """Raw LoCoMo-schema conversations; ``train`` and ``eval`` use disjoint first names and independent seeds."""
    if split not in ("train", "eval"):
        raise ValueError(split)
    rng = random.Random(f"{seed}-dialogue-{split}")
    pool, n = (synth.TRAIN_FIRST, cfg.n_train) if split == "train" else (synth.HELD_OUT_FIRST, cfg.n_eval)
    return [_conversation(rng, cfg, pool, i) for i in range(n)]


# -- registered sets ----------------------------------------------------------------------------------------------


def _locomo(cfg: DataConfig, split: str, kind: str) -> list[dict[str, Any]]:
    convs = locomo_split(cfg.locomo_path, split)
    return question_rows(convs) if kind == "question" else turn_rows(convs)


def _synth(cfg: DataConfig, split: str, kind: str) -> list[dict[str, Any]]:
    options = build_dataclass(ConversationSynthConfig, cfg.synth, "data.synth")
    convs = convert(synth_conversations(options, split, cfg.seed))
    return question_rows(convs) if kind == "question" else turn_rows(convs)


@register("dataset", "locomo_train")
def locomo_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """LoCoMo questions of conversation 1, category 5 dropped (data.locomo_path = locomo10.json)"""
    return _locomo(cfg, "train", "question")


@register("dataset", "locomo_val")
def locomo_val(cfg: DataConfig) -> list[dict[str, Any]]:
    """LoCoMo questions of conversation 2, category 5 dropped (data.locomo_path = locomo10.json)"""
    return _locomo(cfg, "val", "question")


@register("dataset", "locomo_test")
def locomo_test(cfg: DataConfig) -> list[dict[str, Any]]:
    """LoCoMo questions of conversations 3-10, category 5 dropped (data.locomo_path = locomo10.json)"""
    return _locomo(cfg, "test", "question")


@register("dataset", "locomo_turns_train")
def locomo_turns_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """LoCoMo memory-manager states of conversation 1: each turn holding a question's last evidence, with its questions"""
    return _locomo(cfg, "train", "turn")


@register("dataset", "locomo_turns_val")
def locomo_turns_val(cfg: DataConfig) -> list[dict[str, Any]]:
    """LoCoMo memory-manager states of conversation 2: each turn holding a question's last evidence, with its questions"""
    return _locomo(cfg, "val", "turn")


@register("dataset", "synth_dialogue_train")
def synth_dialogue_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """Seeded synthetic multi-session dialogues, one question each row (LoCoMo schema, for CPU)"""
    return _synth(cfg, "train", "question")


@register("dataset", "synth_dialogue_eval")
def synth_dialogue_eval(cfg: DataConfig) -> list[dict[str, Any]]:
    """Held-out synthetic dialogues (unseen names), one question each row"""
    return _synth(cfg, "eval", "question")


@register("dataset", "synth_dialogue_turns_train")
def synth_dialogue_turns_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """Synthetic dialogues as memory-manager states: the turn holding a question's last evidence, with its questions"""
    return _synth(cfg, "train", "turn")
