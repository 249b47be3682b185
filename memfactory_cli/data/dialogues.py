"""Multi-session dialogue QA rows (RMM): one canonical schema, converters from LongMemEval and MSC, a CPU generator.

Canonical row::

    {"id", "question", "answers": [str], "question_type", "question_date", "abstention": bool,
     "sessions": [{"id", "date", "turns": [{"speaker", "text", "has_answer": bool}]}],
     "answer_session_ids": [str]}

Gold evidence for Recall@K is the turns with ``has_answer`` or, when a row marks none, the sessions in
``answer_session_ids``. ``load_rows`` recognises LongMemEval items (``haystack_sessions``), ParlAI MSC lines
(``previous_dialogs`` with MemGPT's ``self_instruct``) and canonical rows (``sessions``) and converts them here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data.files import DATA_DIR, read_rows_file
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register


def is_dialogue_row(row: Any) -> bool:
    return isinstance(row, dict) and any(k in row for k in ("haystack_sessions", "previous_dialogs", "sessions"))


def convert(row: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    """Any accepted multi-session input row -> the canonical row, validated."""
    if "haystack_sessions" in row:
        row = from_longmemeval(row, where)
    elif "previous_dialogs" in row:
        row = from_msc(row, where, index)
    return validate(row, where, index)


def _turn(t: Any, where: str) -> dict[str, Any]:
    if not isinstance(t, dict) or not isinstance(t.get("text"), str) or not isinstance(t.get("speaker"), str):
        raise UserError(f"{where}: every turn needs text 'speaker' and 'text'")
    return {"speaker": t["speaker"], "text": t["text"], "has_answer": bool(t.get("has_answer", False))}


def validate(row: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    question, answers, sessions = row.get("question"), row.get("answers"), row.get("sessions")
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: the question must be non-empty text")
    if isinstance(answers, (str, int, float)):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        raise UserError(f"{where}: 'answers' must be a string or a non-empty list")
    if not isinstance(sessions, list) or not all(isinstance(s, dict) and isinstance(s.get("turns"), list) for s in sessions):
        raise UserError(f"{where}: 'sessions' must be a list of {{id, date, turns}}")
    out_sessions = []
    for k, s in enumerate(sessions):
        turns = [_turn(t, f"{where}: session {k}") for t in s["turns"]]
        out_sessions.append({"id": str(s.get("id", k)), "date": str(s.get("date") or ""), "turns": turns})
    return {
        "id": str(row.get("id", index)),
        "question": question,
        "answers": [str(a) for a in answers],
        "question_type": str(row.get("question_type") or "unknown"),
        "question_date": str(row.get("question_date") or ""),
        "abstention": bool(row.get("abstention", False)),
        "sessions": out_sessions,
        "answer_session_ids": [str(s) for s in row.get("answer_session_ids") or []],
    }


def from_longmemeval(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A LongMemEval item (``longmemeval_{s,m,oracle}[_cleaned].json``). Questions whose id ends in ``_abs`` are
    abstention questions: the reference says the information was never given."""
    for key in ("question_id", "question", "answer", "haystack_sessions"):
        if key not in item:
            raise UserError(f"{where}: LongMemEval item without '{key}'")
    sessions = item["haystack_sessions"]
    ids = item.get("haystack_session_ids") or [str(k) for k in range(len(sessions))]
    dates = item.get("haystack_dates") or [""] * len(sessions)
    if not (len(ids) == len(dates) == len(sessions)):
        raise UserError(f"{where}: haystack_session_ids, haystack_dates and haystack_sessions differ in length")
    qid = str(item["question_id"])
    return {
        "id": qid,
        "question": item["question"],
        "answers": [str(item["answer"])],
        "question_type": item.get("question_type", "unknown"),
        "question_date": item.get("question_date", ""),
        "abstention": qid.endswith("_abs"),
        "sessions": [
            {
                "id": str(sid),
                "date": str(date),
                "turns": [{"speaker": t.get("role", "user"), "text": t.get("content", ""), "has_answer": bool(t.get("has_answer"))} for t in turns],
            }
            for sid, date, turns in zip(ids, dates, sessions)
        ],
        "answer_session_ids": [str(s) for s in item.get("answer_session_ids", [])],
    }


def from_msc(item: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    """A MemGPT MSC-Self-Instruct row (a ParlAI MSC line with ``self_instruct``: {B: question, A: answer}).

    The earlier sessions are the haystack and the row is MemGPT's deep-memory QA. MSC marks no evidence, so
    Recall@K is not defined for it. A plain MSC line (RMM's personalised *response generation*) is refused: that
    task is scored by METEOR and BERTScore against a full reply, with the current session as context, and neither
    metric is available offline here (nltk's METEOR needs WordNet data, BERTScore a RoBERTa-large download);
    boxed EM/F1 of a five-word answer against a full reply would read about 0 by construction.
    """
    previous = item.get("previous_dialogs")
    if not isinstance(previous, list):
        raise UserError(f"{where}: MSC row 'previous_dialogs' must be a list")
    speakers = ("Speaker 1", "Speaker 2")
    sessions = []
    for k, p in enumerate(previous):
        dialog = p.get("dialog", []) if isinstance(p, dict) else []
        when = f"{p.get('time_num', '')} {p.get('time_unit', '')} before".strip() if isinstance(p, dict) and "time_num" in p else ""
        turns = [{"speaker": speakers[j % 2], "text": t.get("text", "") if isinstance(t, dict) else str(t)} for j, t in enumerate(dialog)]
        sessions.append({"id": f"msc{index}-s{k + 1}", "date": when, "turns": turns})
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    rid = f"msc-{meta.get('initial_data_id', index)}-{meta.get('session_id', '')}".rstrip("-")
    instruct = item.get("self_instruct")
    if isinstance(instruct, dict) and "A" in instruct and "B" in instruct:
        return {"id": rid, "question": instruct["B"], "answers": [instruct["A"]], "question_type": "msc_self_instruct", "sessions": sessions}
    raise UserError(
        f"{where}: MSC response generation is not supported (it needs METEOR / BERTScore, see docs/rmm.md); "
        "MemGPT's MSC-Self-Instruct rows (with 'self_instruct') are"
    )


def from_conversation_row(row: dict[str, Any]) -> dict[str, Any]:
    """A LoCoMo-style question row (``meta.turns`` with session numbers, ``meta.qa`` evidence ``dia_id``s; see
    ``data/locomo.py``) -> the canonical multi-session row, evidence turns marked ``has_answer``."""
    meta = row["meta"]
    evidence = {e for q in meta.get("qa", []) for e in q.get("evidence", [])}
    sessions: dict[Any, dict[str, Any]] = {}
    for t in meta["turns"][: meta.get("turn_index", len(meta["turns"]))]:
        s = sessions.setdefault(t.get("session"), {"id": f"{meta.get('conversation', '')}-s{t.get('session')}", "date": t.get("timestamp", ""), "turns": []})
        s["turns"].append({"speaker": t["speaker"], "text": t["text"], "has_answer": t.get("dia_id") in evidence})
    return {
        "id": row["id"],
        "question": row["question"],
        "answers": row["answers"],
        "question_type": f"category {meta.get('category')}",
        "sessions": list(sessions.values()),
    }


def gold_turns(row: dict[str, Any]) -> set[str]:
    """Evidence turn ids ``"<session id>:<turn index>"``: the has_answer turns, else every turn of the answer sessions."""
    marked = {f"{s['id']}:{j}" for s in row["sessions"] for j, t in enumerate(s["turns"]) if t.get("has_answer")}
    if marked:
        return marked
    answer_sessions = set(row.get("answer_session_ids") or [])
    return {f"{s['id']}:{j}" for s in row["sessions"] if s["id"] in answer_sessions for j in range(len(s["turns"]))}


# -- the seeded synthetic generator ------------------------------------------------------------------------------

FACTS = {
    "pet": ("What pet does {name} have?", "{name}: I adopted a {v} last month.", ["cat", "parrot", "rabbit", "hamster", "turtle", "beagle"]),
    "city": ("Which city does {name} live in?", "{name}: I moved to {v} for the new flat.", ["Lisbon", "Osaka", "Denver", "Tallinn", "Quito", "Perth"]),
    "job": ("What is {name}'s job?", "{name}: I started working as a {v} this year.", ["nurse", "pilot", "baker", "chemist", "lawyer", "plumber"]),
    "hobby": ("Which instrument does {name} play?", "{name}: I practise the {v} every evening.", ["cello", "violin", "banjo", "flute", "harp", "drums"]),
    "sport": ("Which sport does {name} play on weekends?", "{name}: On weekends I play {v} with friends.", ["tennis", "rugby", "squash", "hockey", "volleyball", "golf"]),
}
FILLER = [
    "{name}: The weather was lovely today.",
    "Assistant: That sounds nice, tell me more.",
    "{name}: I watched a documentary about whales.",
    "Assistant: Documentaries can be fascinating.",
    "{name}: My coffee went cold again this morning.",
    "Assistant: A warm mug helps with that.",
    "{name}: The train was late by ten minutes.",
    "Assistant: Delays are frustrating.",
]
TRAIN_NAMES = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena"]
EVAL_NAMES = ["Mira", "Noor", "Otto", "Pia", "Quin", "Rosa", "Sami", "Tess"]


@dataclass
class MultiSessionSynthConfig:
    n_train: int = 64
    n_eval: int = 16
    sessions: int = 4
    filler_turns: int = 4
    update_rate: float = 0.3  # share of knowledge-update questions (the fact changes in a later session)

    def __post_init__(self) -> None:
        if self.sessions < 2 or self.n_train < 1 or self.n_eval < 1 or self.filler_turns < 0:
            raise UserError("data.synth: sessions >= 2, n_train >= 1, n_eval >= 1 and filler_turns >= 0 are required")


def synth_multisession(cfg: MultiSessionSynthConfig, split: str, seed: int) -> list[dict[str, Any]]:
    """Seeded multi-session chats about one user each; the question asks one fact stated in one session.

    Every session states one fact (the topics differ), padded with chit-chat. In knowledge-update questions the
    asked fact is restated with a new value in a later session; the latest value is the answer and only that turn
    is evidence. Held-out users come from a disjoint name pool.
    """
    rng = random.Random(f"{seed}-{split}")
    names = TRAIN_NAMES if split == "train" else EVAL_NAMES
    n = cfg.n_train if split == "train" else cfg.n_eval
    rows = []
    for i in range(n):
        name = rng.choice(names)
        topics = rng.sample(sorted(FACTS), min(cfg.sessions, len(FACTS)))
        topics += [rng.choice(sorted(FACTS)) for _ in range(cfg.sessions - len(topics))]
        values = {t: rng.choice(FACTS[t][2]) for t in set(topics)}
        asked = rng.choice(topics[: cfg.sessions - 1])
        update = rng.random() < cfg.update_rate
        sessions = []
        for k, topic in enumerate(topics):
            value = values[topic]
            if update and k == cfg.sessions - 1:
                topic, value = asked, rng.choice([v for v in FACTS[asked][2] if v != values[asked]])
                values[asked] = value
            fact = FACTS[topic][1].format(name=name, v=value)
            fillers = [f.format(name=name) for f in rng.sample(FILLER, min(cfg.filler_turns, len(FILLER)))]
            at = rng.randrange(len(fillers) + 1)
            lines = fillers[:at] + [fact] + fillers[at:]
            turns = [{"speaker": line.split(":", 1)[0], "text": line.split(": ", 1)[1], "has_answer": line == fact} for line in lines]
            sessions.append({"id": f"{split}{i}-s{k}", "date": f"2024-0{1 + k % 9}-1{k % 9}", "turns": turns, "topic": topic})
        evidence = max(k for k, s in enumerate(sessions) if s["topic"] == asked)
        for k, s in enumerate(sessions):
            if k != evidence:
                for t in s["turns"]:
                    t["has_answer"] = False
            del s["topic"]
        rows.append(
            {
                "id": f"{split}-{i}",
                "question": FACTS[asked][0].format(name=name),
                "answers": [values[asked]],
                "question_type": "knowledge-update" if update and evidence == cfg.sessions - 1 else "single-session-user",
                "question_date": "2024-12-01",
                "sessions": sessions,
                "answer_session_ids": [sessions[evidence]["id"]],
            }
        )
    return rows


# -- registered sets -----------------------------------------------------------------------------------------------

LONGMEMEVAL_HUB = "xiaowu0162/longmemeval-cleaned"


def longmemeval_items(variant: str) -> list[dict[str, Any]]:
    """``data/longmemeval_<variant>_cleaned.json`` (or without ``_cleaned``), as published; one clear line if absent."""
    for name in (f"longmemeval_{variant}_cleaned.json", f"longmemeval_{variant}.json"):
        path = DATA_DIR / name
        if path.is_file():
            return read_rows_file(path)
    raise UserError(
        f"longmemeval_{variant}: put longmemeval_{variant}_cleaned.json in {DATA_DIR}/ (on a connected machine: "
        f"`hf download --repo-type dataset {LONGMEMEVAL_HUB} longmemeval_{variant}_cleaned.json --local-dir {DATA_DIR}`)"
    )


def _every_fifth(items: list[dict[str, Any]], test: bool) -> list[dict[str, Any]]:
    """A fixed split by position: every fifth question is held out (LongMemEval ships one set, no split)."""
    return [x for i, x in enumerate(items) if (i % 5 == 0) == test]


@register("dataset", "rmm_synth_train")
def rmm_synth_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """Seeded synthetic multi-session chats with one asked fact each (RMM, CPU)."""
    return synth_multisession(build_dataclass(MultiSessionSynthConfig, cfg.synth, "data.synth"), "train", cfg.seed)


@register("dataset", "rmm_synth_eval")
def rmm_synth_eval(cfg: DataConfig) -> list[dict[str, Any]]:
    """Held-out synthetic multi-session chats (unseen user names)."""
    return synth_multisession(build_dataclass(MultiSessionSynthConfig, cfg.synth, "data.synth"), "eval", cfg.seed)


@register("dataset", "longmemeval_s")
def longmemeval_s(cfg: DataConfig) -> list[dict[str, Any]]:
    """LongMemEval-S, all 500 questions (data/longmemeval_s_cleaned.json)."""
    return longmemeval_items("s")


@register("dataset", "longmemeval_m")
def longmemeval_m(cfg: DataConfig) -> list[dict[str, Any]]:
    """LongMemEval-M, all 500 questions (data/longmemeval_m_cleaned.json)."""
    return longmemeval_items("m")


@register("dataset", "longmemeval_oracle")
def longmemeval_oracle(cfg: DataConfig) -> list[dict[str, Any]]:
    """LongMemEval-ORACLE, all 500 questions (data/longmemeval_oracle_cleaned.json)."""
    return longmemeval_items("oracle")


@register("dataset", "longmemeval_s_train")
def longmemeval_s_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """LongMemEval-S, the other 400 questions, for RMM's reranker."""
    return _every_fifth(longmemeval_items("s"), test=False)


@register("dataset", "longmemeval_s_test")
def longmemeval_s_test(cfg: DataConfig) -> list[dict[str, Any]]:
    """LongMemEval-S, every fifth question (100), for RMM's reranker."""
    return _every_fifth(longmemeval_items("s"), test=True)
