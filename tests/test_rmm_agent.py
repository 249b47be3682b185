"""The RMM agent end to end with a scripted LLM: reflection builds the bank (Add and Merge applied), answers cite,
citations train the reranker, retrieval recall is measured, and the eval path carries it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from memfactory_cli.agents.rmm import RMMAgent, RMMConfig
from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.errors import UserError

SESSIONS = [
    {"id": "s1", "date": "2024-01-05", "turns": [
        {"speaker": "user", "text": "I just adopted a grey cat called Miso.", "has_answer": True},
        {"speaker": "assistant", "text": "Congratulations on the new cat!"},
        {"speaker": "user", "text": "I work night shifts as a nurse."},
    ]},
    {"id": "s2", "date": "2024-02-10", "turns": [
        {"speaker": "user", "text": "Miso the cat now sleeps on my bed every night."},
        {"speaker": "assistant", "text": "Cats love warm places."},
    ]},
]
ROW = {"id": "q1", "question": "What is the name of my cat?", "answers": ["Miso"], "question_type": "single-session-user",
       "question_date": "2024-03-01", "sessions": SESSIONS, "answer_session_ids": ["s1"]}


class Scripted:
    """A stand-in LLM answering each prompt kind by rule; records every prompt it saw."""

    def __init__(self, tokenizer, merge: bool = True):
        self.tokenizer, self.merge, self.seen = tokenizer, merge, []

    def reply(self, text: str) -> str:
        if "Memories about user" in text and "adopted a grey cat" in text:
            return json.dumps({"extracted_memories": [
                {"summary": "User has a grey cat named Miso.", "reference": [0]},
                {"summary": "User works night shifts as a nurse.", "reference": [2, 9]},
            ]})
        if "Memories about user" in text:
            return json.dumps({"extracted_memories": [{"summary": "User's cat Miso sleeps on the bed.", "reference": [0]}]})
        if "Memories about assistant" in text:
            return "NO_TRAIT"
        if "New summary:" in text:
            if self.merge and "sleeps on the bed" in text:
                k = re.search(r"\[(\d+)\] User has a grey cat", text).group(1)
                return f"Merge({k}, User has a grey cat named Miso who sleeps on the bed.)"
            return "Add()"
        shown = re.findall(r"^\[(\d+)\] \([^)]*\) (.*)$", text, re.M)
        cited = [n for n, s in shown if "Miso" in s]
        return f"\\boxed{{Miso}} [{', '.join(cited)}]" if cited else "\\boxed{unknown} [NO_CITE]"

    def generate(self, prompts, max_new_tokens):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            self.seen.append(text)
            out.append(self.tokenizer(self.reply(text), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id])
        return out


def _agent(tokenizer, reranker="linear", **options):
    return RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, reranker, RMMConfig(max_extract_tokens=200, **options))


def test_prospective_reflection_adds_then_merges(tokenizer):
    agent, llm = _agent(tokenizer), Scripted(tokenizer)
    (traj,) = agent.rollout(agent.episodes([ROW]), llm)
    summaries = [m["summary"] for m in traj.bank]
    assert summaries == ["User has a grey cat named Miso who sleeps on the bed.", "User works night shifts as a nurse."]
    cat = traj.bank[0]
    assert cat["refs"] == ["s1:0", "s2:0"] and cat["timestamp"] == "2024-02-10" and cat["session_id"] == "s2"
    assert traj.bank[1]["refs"] == ["s1:2"]  # turn 9 does not exist
    extract_prompts = [s for s in llm.seen if "Memories about" in s]
    assert sum("Memories about user" in s for s in extract_prompts) == 2 and sum("Memories about assistant" in s for s in extract_prompts) == 2
    assert traj.stats["update/merge"] == 1 and traj.stats["update/add"] == 2 and traj.stats["extract/invalid"] == 0
    assert traj.scores["recall@k"] == traj.scores["recall@m"] == 1.0
    assert traj.answer.startswith("\\boxed{Miso}") and traj.cited == [traj.memories.index(cat["summary"])]


def test_without_merge_every_summary_is_added(tokenizer):
    agent = _agent(tokenizer)
    (traj,) = agent.rollout(agent.episodes([ROW]), Scripted(tokenizer, merge=False))
    assert len(traj.bank) == 3


def test_citations_train_the_reranker_towards_the_cited_memory(tokenizer):
    agent = _agent(tokenizer, memory="turn", top_m=2, batch_size=1, learning_rate=0.05)
    agent.training = True
    llm = Scripted(tokenizer)
    (traj,) = agent.rollout(agent.episodes([ROW]), llm)
    q, cands = traj.query_embedding, traj.candidate_embeddings
    gold = [i for i, b in enumerate(traj.candidates) if "Miso" in traj.bank[b]["summary"]]
    before = agent.reranker(q, cands).detach()
    for _ in range(5):
        (traj,) = agent.rollout(agent.episodes([ROW]), llm)
        stats = agent.learn([traj])
    after = agent.reranker(q, cands).detach()
    assert stats["reranker/updates"] == 1
    others = [i for i in range(len(traj.candidates)) if i not in gold]
    margin = lambda s: s[gold].mean() - s[others].mean()  # noqa: E731
    assert margin(after) > margin(before)


def test_no_citation_group_means_no_update(tokenizer):
    agent = _agent(tokenizer, memory="turn")

    class Silent(Scripted):
        def reply(self, text):
            return "\\boxed{Miso}"

    (traj,) = agent.rollout(agent.episodes([ROW]), Silent(tokenizer))
    assert traj.cited is None and agent.learn([traj])["reranker/updates"] == 0 and traj.stats["citation/missing"] == 1


def test_llm_variant_has_one_trainable_rerank_turn_and_answers_from_its_pick(tokenizer):
    agent = _agent(tokenizer, reranker="llm", memory="turn")

    class Picker(Scripted):
        def reply(self, text):
            if "Selected ids:" in text:
                return "[" + re.search(r"\[ID: (\d+)\] user: I just adopted", text).group(1) + "]"
            return super().reply(text)

    (traj,) = agent.rollout(agent.episodes([ROW, ROW]), Picker(tokenizer))[:1]
    assert [t.kind for t in traj.turns] == ["rerank"] and traj.turns[0].trainable
    assert traj.extras["rmm_rerank_ok"] and traj.extras["rmm_cited"] == 1 and traj.memories == ["user: I just adopted a grey cat called Miso."]
    assert traj.to_record()["answer"].startswith("\\boxed{Miso}")


def test_reranker_weights_load_into_a_fresh_agent(tokenizer, tmp_path):
    a = _agent(tokenizer, seed=3)
    path = a.save(tmp_path)
    b = _agent(tokenizer, seed=4, reranker_weights=str(path))
    assert torch.equal(a.reranker.w_q, b.reranker.w_q) and torch.equal(a.reranker.w_m, b.reranker.w_m)


def test_settings_errors(tokenizer):
    with pytest.raises(UserError, match="need embeddings"):
        RMMAgent(tokenizer, {"retriever": {"name": "bm25"}}, "linear", RMMConfig(memory="turn"))
    with pytest.raises(UserError, match="agent.reranker must be one of"):
        RMMAgent(tokenizer, {}, "cross", RMMConfig(memory="turn"))
    with pytest.raises(UserError, match=r"agent.options.memory: Invalid value 'chunks', expected one of \['reflection'"):
        build_dataclass(RMMConfig, {"memory": "chunks"}, "agent.options")
    # BM25 is fine where no embedding is needed
    RMMAgent(tokenizer, {"retriever": {"name": "bm25"}}, "none", RMMConfig(memory="turn"))


def test_a_frozen_llm_reflects_each_conversation_once(tokenizer):
    """With the LLM frozen (linear / none reranker), the topic bank of a conversation is built once and reused by
    every later rollout and eval of it: the second rollout asks for no extraction or update at all (it rebuilt
    every bank on every rollout; reviews/r1-rmm.md R3)."""
    agent, llm = _agent(tokenizer), Scripted(tokenizer)
    first = agent.rollout(agent.episodes([ROW]), llm)
    reflected = [s for s in llm.seen if "Memories about" in s or "New summary:" in s]
    assert len(reflected) == 6  # 2 sessions x 2 speakers, then 2 Add/Merge decisions
    agent.training = True
    second = agent.rollout(agent.episodes([ROW, ROW]), llm)
    assert [s for s in llm.seen if "Memories about" in s or "New summary:" in s] == reflected
    assert second[0].bank == second[1].bank == first[0].bank
    assert second[0].stats["reflection/cached"] == 1.0 and first[0].stats["reflection/cached"] == 0.0


def test_a_trained_llm_reflects_again(tokenizer):
    """The MemFactory-style llm reranker trains the LLM that also reflects: its banks are never reused."""
    agent, llm = _agent(tokenizer, reranker="llm"), Scripted(tokenizer)
    agent.rollout(agent.episodes([ROW]), llm)
    agent.rollout(agent.episodes([ROW]), llm)
    assert sum("Memories about user" in s for s in llm.seen) == 4


def test_longmemeval_recall_any_and_all_at_turn_and_session_level():
    """Against LongMemEval's ``evaluate_retrieval`` / ``evaluate_retrieval_turn2session`` run on the same ranking
    (corpus ['s1_1', 's3_1', 's2_1'], gold ['s1_1', 's2_2']): turn any/all 1/0 at 3 and at 1; session 1/1 at 3 and
    1/0 at 1. Here K = 3 entries are retrieved and M = 1 is kept."""
    from memfactory_cli.agents.base import Episode
    from memfactory_cli.agents.rmm import RMMTrajectory
    from memfactory_cli.modules.reflection import MemoryEntry, TopicBank

    sessions = [{"id": s, "turns": [{"speaker": "user", "text": "x", "has_answer": g == 0}, {"speaker": "user", "text": "y", "has_answer": g == 1}]}
                for s, g in (("s1", 0), ("s2", 1), ("s3", None))]
    row = {"id": "q", "question": "?", "answers": ["a"], "sessions": sessions}
    bank = TopicBank([MemoryEntry("a", ["s1:0"], "s1", ""), MemoryEntry("b", ["s3:0"], "s3", ""), MemoryEntry("c", ["s2:0"], "s2", "")])
    t = RMMTrajectory(episode=Episode(row, [], []), candidates=[0, 1, 2], selected=[0])
    RMMAgent._score(t, bank)
    assert t.scores == {
        "recall@k": 1.0, "turn_recall_all@k": 0.0, "session_recall_any@k": 1.0, "session_recall_all@k": 1.0,
        "recall@m": 1.0, "turn_recall_all@m": 0.0, "session_recall_any@m": 1.0, "session_recall_all@m": 0.0,
    }
    t = RMMTrajectory(episode=Episode({**row, "abstention": True}, [], []), candidates=[0, 1, 2], selected=[0])
    RMMAgent._score(t, bank)
    assert set(t.scores.values()) == {None}  # LongMemEval leaves abstention questions out of retrieval metrics


def test_online_evaluation_is_prequential_and_equals_answering_then_learning_one_question_at_a_time(tokenizer):
    """options.online: one batched eval rollout of 7 questions gives the same selections and the same final weights
    as answering question i (Gumbel top-M), learning from its citations, then answering question i + 1."""
    rows = [{**ROW, "id": f"q{i}"} for i in range(7)]
    options = dict(memory="turn", top_m=2, batch_size=2, learning_rate=0.05)
    online, llm = _agent(tokenizer, online=True, **options), Scripted(tokenizer)
    batched = online.rollout(online.episodes(rows), llm)
    stepwise, reference = [], _agent(tokenizer, **options)
    reference.training = True
    for row in rows:
        (t,) = reference.rollout(reference.episodes([row]), llm)
        reference.learn([t])
        stepwise.append(t)
    assert [t.selected for t in batched] == [t.selected for t in stepwise]
    assert torch.equal(online.reranker.w_q, reference.reranker.w_q) and online.reranker.pending == 1
    frozen = _agent(tokenizer, **options)
    start = frozen.reranker.w_q.clone()
    frozen.rollout(frozen.episodes(rows), llm)
    assert torch.equal(frozen.reranker.w_q, start) and not torch.equal(online.reranker.w_q, start)  # eval alone learns nothing


def test_online_report_is_the_running_recall_over_the_stream(tokenizer):
    agent = _agent(tokenizer, online=True, memory="turn")
    records = [{"q": q, "sample": 0, "scores": {"recall@m": v}} for q, v in enumerate([0.0, 1.0, None, 1.0, 1.0])]
    report = agent.eval_report(records)
    assert report["scored"] == 4 and report["running_recall@m"][-1] == {"n": 4, "recall@m": 0.75}
    assert report["running_recall@m"][0] == {"n": 1, "recall@m": 0.0}
    assert report["first_half_recall@m"] == 0.5 and report["second_half_recall@m"] == 1.0
    assert _agent(tokenizer, memory="turn").eval_report(records) is None
    with pytest.raises(UserError, match="only the linear reranker adapts online"):
        _agent(tokenizer, reranker="none", online=True)


def test_online_top_m_serves_the_deterministic_selection_and_still_learns(tokenizer):
    rows = [{**ROW, "id": f"q{i}"} for i in range(4)]
    options = dict(memory="turn", top_m=2, batch_size=2, learning_rate=0.05)
    online, llm = _agent(tokenizer, online=True, online_selection="top_m", **options), Scripted(tokenizer)
    frozen = _agent(tokenizer, **options)
    first = frozen.rollout(frozen.episodes(rows[:1]), llm)[0]
    start = online.reranker.w_q.clone()
    served = online.rollout(online.episodes(rows), llm)
    assert served[0].selected == first.selected  # before any update, exactly the eval selection
    assert not torch.equal(online.reranker.w_q, start)
    from memfactory_cli.config.loader import build_dataclass

    with pytest.raises(UserError, match="online_selection: Invalid value 'greedy'"):
        build_dataclass(RMMConfig, {"online": True, "online_selection": "greedy"}, "agent.options")
