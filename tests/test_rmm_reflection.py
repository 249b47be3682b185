"""Prospective reflection and citations on hand cases: extraction, Add/Merge parsed and applied, citation groups."""

from __future__ import annotations

import torch

from memfactory_cli.modules.reflection import (
    Add,
    MemoryEntry,
    Merge,
    TopicBank,
    apply_update,
    parse_citations,
    parse_extraction,
    parse_rerank_ids,
    parse_update,
)


def fake_embed(texts):
    """Deterministic test embedder: the length of each text in one coordinate (enough to see re-embedding)."""
    return torch.tensor([[float(len(t)), 1.0] for t in texts])


def _bank():
    entries = [
        MemoryEntry("User has a cat named Miso.", ["s1:0"], "s1", "2023-01-01"),
        MemoryEntry("User works as a nurse.", ["s1:2"], "s1", "2023-01-01"),
    ]
    for e in entries:
        e.embedding = fake_embed([e.summary])[0]
    return TopicBank(entries)


def test_extraction_json_no_trait_and_garbage():
    text = '<think>hmm</think>```json\n{"extracted_memories": [{"summary": "User likes jazz.", "reference": [0, 3, 9]}]}\n```'
    parsed = parse_extraction(text, n_turns=4)
    assert parsed.ok and [(e.summary, e.reference) for e in parsed.value] == [("User likes jazz.", [0, 3])]
    assert parsed.dropped == 1  # turn 9 does not exist
    assert parse_extraction("NO_TRAIT", 4).ok and parse_extraction("NO_TRAIT", 4).value == []
    assert not parse_extraction("the user likes jazz", 4).ok
    assert not parse_extraction('{"memories": []}', 4).ok


def test_update_parsing():
    assert parse_update("Add()", 3).value == [Add()]
    parsed = parse_update("Merge(1, User works as a night-shift nurse (since 2023).)", 3)
    assert parsed.ok and parsed.value == [Merge(1, "User works as a night-shift nurse (since 2023).")]
    two = parse_update("Merge(0, A.)\nMerge(2, B.)", 3)
    assert two.value == [Merge(0, "A."), Merge(2, "B.")]
    bad = parse_update("Merge(7, C.)", 3)
    assert not bad.ok and bad.dropped == 1
    assert not parse_update("I think we should add it", 3).ok


def test_add_appends_with_an_embedding():
    bank = _bank()
    new = MemoryEntry("User plays the cello.", ["s2:1"], "s2", "2023-02-01")
    written = apply_update(bank, new, [1, 0], parse_update("Add()", 2), fake_embed)
    assert written == [2] and bank.entries[2].summary == "User plays the cello."
    assert bank.entries[2].embedding is not None and bank.matrix().shape == (3, 2)


def test_merge_rewrites_the_candidate_it_names_and_reembeds():
    bank = _bank()
    new = MemoryEntry("User now works nights.", ["s2:4"], "s2", "2023-02-01")
    candidates = [1, 0]  # prompt index 0 is bank entry 1 (the job), index 1 is bank entry 0
    decision = parse_update("Merge(0, User works as a nurse on night shifts.)", 2)
    assert apply_update(bank, new, candidates, decision, fake_embed) == [1]
    entry = bank.entries[1]
    assert entry.summary == "User works as a nurse on night shifts."
    assert entry.refs == ["s1:2", "s2:4"] and entry.timestamp == "2023-02-01" and entry.session_id == "s2"
    assert entry.embedding[0] == len(entry.summary)
    assert len(bank.entries) == 2 and bank.entries[0].summary == "User has a cat named Miso."


def test_unparseable_decision_adds_rather_than_loses_the_memory():
    bank = _bank()
    new = MemoryEntry("User visited Kyoto.", ["s3:0"], "s3", "2023-03-01")
    assert apply_update(bank, new, [0], parse_update("maybe?", 1), fake_embed) == [2]


def test_missing_embedding_fails_loudly():
    bank = _bank()
    bank.entries[0].embedding = None
    try:
        bank.matrix()
    except ValueError as exc:
        assert "no embedding" in str(exc)
    else:
        raise AssertionError("a missing embedding must not be skipped silently")


def test_citation_groups_no_cite_and_out_of_range():
    assert parse_citations("\\boxed{Miso} [0, 2]", 5).value == [0, 2]
    several = parse_citations("\\boxed{Miso} [1] and also [3, 4]", 5)
    assert several.ok and several.value == [1, 3, 4]
    none = parse_citations("\\boxed{unknown} [NO_CITE]", 5)
    assert none.ok and none.value == []
    out = parse_citations("[0, 7, -1]", 5)
    assert out.value == [0] and out.dropped == 2
    assert not parse_citations("\\boxed{Miso}", 5).ok
    assert parse_citations("<think>[4]</think> \\boxed{x} [sic] [2]", 5).value == [2]


def test_llm_rerank_ids_format():
    good = parse_rerank_ids("<think>x</think> [3, 12, 3]", 30, 8)
    assert good.value == [3, 12] and not good.ok  # duplicates break the format
    assert parse_rerank_ids("[3, 12]", 30, 8).ok
    assert not parse_rerank_ids("[" + ", ".join(map(str, range(9))) + "]", 30, 8).ok
    assert not parse_rerank_ids("[31]", 30, 8).ok and not parse_rerank_ids("none", 30, 8).ok


def test_a_merge_keeps_the_later_session_not_the_larger_string():
    """LoCoMo stamps ("1:56 pm on 8 May, 2023") do not sort as strings: the later session in haystack order wins
    (a string max kept 8 May and the old session; reviews/r1-rmm.md R5)."""
    bank = TopicBank([MemoryEntry("User paints.", ["s1:0"], "s1", "1:56 pm on 8 May, 2023", order=0)])
    bank.entries[0].embedding = fake_embed(["x"])[0]
    new = MemoryEntry("User paints lakes.", ["s5:2"], "s5", "10:37 am on 27 June, 2023", order=4)
    apply_update(bank, new, [0], parse_update("Merge(0, User paints lakes at sunrise.)", 1), fake_embed)
    entry = bank.entries[0]
    assert (entry.timestamp, entry.session_id, entry.order) == ("10:37 am on 27 June, 2023", "s5", 4)
    # and an older session merged into a newer entry leaves the entry's date alone
    old = MemoryEntry("User painted once.", ["s0:1"], "s0", "9:00 am on 9 January, 2023", order=-1)
    apply_update(bank, old, [0], parse_update("Merge(0, User paints lakes.)", 1), fake_embed)
    assert (entry.timestamp, entry.session_id) == ("10:37 am on 27 June, 2023", "s5")


def test_reflection_numbers_entries_by_session_order(tokenizer):
    from memfactory_cli.agents.rmm import RMMAgent, RMMConfig
    from tests.test_rmm_agent import ROW, Scripted

    agent = RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, "linear", RMMConfig(max_extract_tokens=200))
    (traj,) = agent.rollout(agent.episodes([ROW]), Scripted(tokenizer))
    assert [m["order"] for m in traj.bank] == [1, 0]  # the cat entry was merged with session 2's summary
