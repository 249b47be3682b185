"""Answer retention read from recorded trajectories: the answer appears in chunk 2, survives chunk 3, is dropped at 4."""

import math

import pytest

from memfactory_cli.agents.base import Episode, Trajectory, Turn
from memfactory_cli.report import retention as ret

CHUNKS = [
    "Alice met Bob at the market on Monday.",
    "Later Alice said: I moved to Lisbon last spring.",
    "They talked about the weather for a while.",
    "Bob mentioned his parrot and his new job.",
]
MEMORIES = [
    "Alice and Bob met at a market.",
    "Alice lives in LISBON (moved last spring).",
    "Alice lives in Lisbon. Weather talk.",
    "Bob has a parrot and a new job.",
]


def handmade(answers=("Lisbon",), memories=MEMORIES, chunks=CHUNKS) -> dict:
    episode = Episode({"id": "q0", "question": "Where does Alice live?", "answers": list(answers)}, [], [])
    traj = Trajectory(episode, turns=[Turn("memory_update", [], [], True)] * len(chunks) + [Turn("answer", [], [], True, "\\boxed{Porto}")])
    traj.chunks, traj.memories = list(chunks), list(memories)
    return traj.to_record()


def test_handmade_trajectory_retention_is_exactly_seen_at_2_kept_at_3_dropped_at_4():
    r = ret.retention(handmade())
    assert r.in_chunk == (False, True, False, False)
    assert r.held == (False, True, True, False)
    assert (r.first_seen, r.seen_in, r.dropped_at, r.not_kept_at, r.final) == (2, [2], [4], [], False)
    summary = ret.summarise_records([handmade()])
    assert summary["final"] == 0.0 and summary["seen"] == summary["trajectories"] == 1
    assert summary["first_seen"] == {2: 1}
    assert summary["per_chunk"] == [{"chunk": 2, "n": 1, "held": 1.0}, {"chunk": 3, "n": 1, "held": 1.0}, {"chunk": 4, "n": 1, "held": 0.0}]
    metrics = ret.as_metrics(summary)
    assert metrics["retention/final"] == 0.0 and metrics["retention/chunk_3"] == 1.0 and "retention/chunk_1" not in metrics


def test_shares_pool_trajectories_and_leave_out_what_has_no_retention():
    kept = handmade(memories=[*MEMORIES[:3], "Alice: Lisbon. Bob: parrot."])
    never_seen = handmade(answers=("Madrid",))
    no_refs = handmade(answers=())
    no_chunks = {**handmade(), "chunks": []}  # an older results row, or an agent that reads no chunks
    records = [handmade(), kept, never_seen, no_refs, no_chunks]
    summary = ret.summarise_records(records)
    assert summary["trajectories"] == 3 and summary["seen"] == 2 and summary["seen_share"] == pytest.approx(2 / 3)
    assert summary["final"] == 0.5
    assert [p["held"] for p in summary["per_chunk"]] == [1.0, 1.0, 0.5]
    assert ret.summarise_records([no_refs, no_chunks]) is None
    undefined = ret.as_metrics(ret.summarise_records([never_seen]))
    assert math.isnan(undefined["retention/final"]) and undefined["retention/seen"] == 0.0


def test_counts_merged_over_parts_equal_counts_of_all():
    records = [handmade(), handmade(memories=[*MEMORIES[:3], "Lisbon"]), handmade(answers=("parrot",))]
    whole = ret.summarise(ret.counts(records))
    parts = ret.summarise(ret.merge([ret.counts(records[:1]), ret.counts(records[1:])]))
    assert whole == parts


def test_normalised_whole_word_match():
    r = ret.retention(handmade(answers=("the lisbon!",), memories=["Lisbonite", "x", "x", "x"], chunks=["", "", "", "Lisbon,"]))
    assert r.in_chunk == (False, False, False, True) and r.held == (False, False, False, False)
    assert r.not_kept_at == [4] and r.final is False


def test_memory_r1_bank_is_the_memory_after_its_one_turn():
    record = {"answers": ["Lisbon"], "chunks": ["Alice: My home city is Lisbon"], "memories": ["[0] Bob: parrot", "[1] Alice: home city Lisbon"]}
    assert ret.memory_steps(record) == [("Alice: My home city is Lisbon", "[0] Bob: parrot\n[1] Alice: home city Lisbon")]
    assert ret.retention(record).final is True
    assert ret.retention({**record, "memories": ["[0] Bob: parrot"]}).final is False


def test_summary_md_has_a_retention_row_per_set_and_model():
    from memfactory_cli.report.summary import to_markdown

    entry = {"set": "synth_eval", "model": "m", "n": 1, "k": 1, "metrics": {"em": {"mean": 0.0, "stderr": 0.0}}}
    md = to_markdown([{**entry, "retention": ret.summarise_records([handmade()])}, {**entry, "set": "other"}])
    assert "## Answer retention" in md
    assert "| synth_eval | m | 0.000 | 1 / 1 | 2: 1 | 2: 1.000, 3: 1.000, 4: 0.000 |" in md
    assert "| other | m |" not in md.split("## Answer retention")[1]
    assert "## Answer retention" not in to_markdown([entry])
