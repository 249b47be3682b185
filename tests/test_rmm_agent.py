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
    assert traj.scores == {"recall@k": 1.0, "recall@m": 1.0}
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
