"""Answer retention read from recorded trajectories: the answer appears in chunk 2, survives chunk 3, is dropped at 4."""

import json
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
    assert summary["first_seen"] == [{"chunk": 2, "n": 1}]
    assert json.loads(json.dumps(summary)) == summary  # summary.json reads back equal (resumed evals compare them)
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


# ---------------------------------------------------------------- the viewer


def _step_html(page: str, k: int) -> str:
    """The part of the page from the k-th memory step to the next one (or the final answer)."""
    start = page.index(f"memory after chunk {k}/")
    ends = [i for i in (page.find(f"memory after chunk {k + 1}/", start), page.find("final answer", start)) if i > 0]
    return page[start : min(ends)]


def test_viewer_shows_each_chunk_collapsed_with_the_answer_marked_and_the_dropped_step():
    from memfactory_cli.report import trace_html

    page = trace_html([handmade()])
    assert page.count("<details class='chunk'>") == 4  # one per memory step, collapsed (no 'open')
    assert "chunk 2 read (48 characters, the answer 1×)" in page
    assert "Later Alice said: I moved to <mark>Lisbon</mark> last spring." in page
    assert "<mark>LISBON</mark>" in _step_html(page, 2)  # normalised match, raw text kept
    assert "answer in this chunk" in _step_html(page, 2) and "answer in this chunk" not in _step_html(page, 3)
    assert "memory holds the answer" in _step_html(page, 3)
    assert "dropped the answer" in _step_html(page, 4) and "dropped the answer" not in page.split("memory after chunk 4/")[0]
    assert "<del>" in _step_html(page, 4) and "<mark>Lisbon" in _step_html(page, 4)  # the lost answer, struck out and marked
    assert "answer first in chunk 2; dropped after chunk 4" in page


def test_viewer_escapes_chunks_memories_and_references():
    from memfactory_cli.report import trace_html

    record = handmade(answers=("<b>x</b>",), chunks=["<script>alert(1)</script>", "a <b>x</b> b", "", ""], memories=["<img src=x onerror=alert(1)>", "<b>x</b>", "", ""])
    page = trace_html([record])
    assert "<script>alert" not in page and "<img" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;<mark>b&gt;x&lt;/b</mark>&gt;" in page  # marks leave out surrounding punctuation


def test_infer_renders_a_training_runs_rollouts_jsonl(tmp_path, capsys):
    from tests.conftest import run_cli

    rollouts = tmp_path / "rollouts.jsonl"
    rows = [{"step": 3, "slot": i, **handmade(), "rewards": {"sub_em": 0.0}, "reward": 0.0} for i in (0, 2)]
    rollouts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = tmp_path / "t.html"
    assert run_cli("infer", "--from", str(rollouts), "--html", str(html)) == 0
    page = html.read_text()
    assert page.count("<details class='traj'") == 2 and "step 3" in page and "slot 2" in page
    assert "sub_em: <b>0.000</b>" in page and "no scores" not in page
    assert "<mark>Lisbon</mark>" in page and "dropped the answer" in page


def test_viewer_title_sums_up_each_kind_of_trajectory():
    from memfactory_cli.report import trace_html

    back = handmade(memories=[MEMORIES[0], MEMORIES[1], "weather", "Lisbon"])  # dropped after 3, stored again at 4
    never = handmade(memories=["x"] * 4)
    page = trace_html([back, never, handmade(answers=("Madrid",))])
    assert "answer first in chunk 2; in the final memory, dropped after chunk 3, taken up again" in page
    assert "answer first in chunk 2; not kept" in page and "answer not kept" in page
    assert "answer never in the document" in page
