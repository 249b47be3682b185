"""Multi-session data: LongMemEval and MSC converters on hand-written fixtures (published schemas), the seeded
synthetic generator, gold evidence for Recall@K, and the rmm_* rewards."""

from __future__ import annotations

import json

import pytest

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data.dialogues import MultiSessionSynthConfig, gold_turns, synth_multisession
from memfactory_cli.data.sources import load_rows
from memfactory_cli.errors import UserError
from memfactory_cli.rewards.rmm import rmm_accuracy_reward, rmm_citation_reward, rmm_format_reward

LONGMEMEVAL = [
    {
        "question_id": "e47becba",
        "question_type": "single-session-user",
        "question": "What degree did I graduate with?",
        "answer": "Business Administration",
        "question_date": "2023/05/30 (Tue) 23:40",
        "haystack_session_ids": ["sharegpt_1", "answer_280352e9"],
        "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/22 (Mon) 10:04"],
        "haystack_sessions": [
            [{"role": "user", "content": "Write a haiku about rain."}, {"role": "assistant", "content": "Soft rain on the roof..."}],
            [
                {"role": "user", "content": "I graduated with a degree in Business Administration.", "has_answer": True},
                {"role": "assistant", "content": "Congratulations!"},
            ],
        ],
        "answer_session_ids": ["answer_280352e9"],
    },
    {
        "question_id": "0a995998_abs",
        "question_type": "multi-session",
        "question": "How many guitars do I own?",
        "answer": "The information provided is not enough.",
        "question_date": "2023/06/01",
        "haystack_session_ids": ["s_a"],
        "haystack_dates": ["2023/05/01"],
        "haystack_sessions": [[{"role": "user", "content": "I like jazz."}]],
        "answer_session_ids": [],
    },
]

MSC_LINE = {
    "personas": [["I like hiking."], ["I have two dogs."]],
    "dialog": [
        {"id": "Speaker 1", "text": "How are the dogs?"},
        {"id": "Speaker 2", "text": "They loved the hike on Saturday!"},
    ],
    "previous_dialogs": [
        {"dialog": [{"text": "I went hiking in the Alps."}, {"text": "I walk my two dogs daily."}], "time_num": 3, "time_unit": "days"},
    ],
    "metadata": {"initial_data_id": "train_42", "session_id": 2},
    "init_personas": [["I like hiking."], ["I have two dogs."]],
}


def test_longmemeval_items_convert(tmp_path):
    path = tmp_path / "lme.json"
    path.write_text(json.dumps(LONGMEMEVAL))
    rows = load_rows(str(path), DataConfig())
    first, abst = rows
    assert first["id"] == "e47becba" and first["answers"] == ["Business Administration"]
    assert [s["id"] for s in first["sessions"]] == ["sharegpt_1", "answer_280352e9"]
    assert first["sessions"][1]["date"] == "2023/05/22 (Mon) 10:04"
    assert first["sessions"][1]["turns"][0] == {"speaker": "user", "text": "I graduated with a degree in Business Administration.", "has_answer": True}
    assert gold_turns(first) == {"answer_280352e9:0"} and not first["abstention"]
    assert abst["abstention"] and abst["question_type"] == "multi-session" and gold_turns(abst) == set()


def test_gold_falls_back_to_answer_sessions():
    row = {"sessions": [{"id": "a", "turns": [{"speaker": "u", "text": "x"}, {"speaker": "u", "text": "y"}]}], "answer_session_ids": ["a"]}
    assert gold_turns(row) == {"a:0", "a:1"}


def test_msc_self_instruct_line_converts(tmp_path):
    path = tmp_path / "msc.jsonl"
    path.write_text(json.dumps({**MSC_LINE, "self_instruct": {"B": "Where did I hike?", "A": "the Alps"}}) + "\n")
    (qa,) = load_rows(str(path), DataConfig())
    assert qa["question"] == "Where did I hike?" and qa["answers"] == ["the Alps"] and qa["id"] == "msc-train_42-2"
    (session,) = qa["sessions"]
    assert [t["speaker"] for t in session["turns"]] == ["Speaker 1", "Speaker 2"] and session["date"] == "3 days before"
    assert qa["question_type"] == "msc_self_instruct"


def test_msc_response_generation_is_refused_not_scored_near_zero(tmp_path):
    """RMM's MSC task is a personalised reply scored by METEOR / BERTScore; boxed EM/F1 of a five-word answer
    against a full reply is about 0 by construction, and the current session's context was dropped. The set and the
    conversion are gone (they used to load): one clear line instead (reviews/r1-rmm.md R2)."""
    from memfactory_cli.registry import registry

    path = tmp_path / "msc.jsonl"
    path.write_text(json.dumps(MSC_LINE) + "\n")
    with pytest.raises(UserError, match="MSC response generation is not supported"):
        load_rows(str(path), DataConfig())
    assert "msc_test" not in registry("dataset")


def test_bad_rows_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{k: v for k, v in LONGMEMEVAL[0].items() if k != "answer"}]))
    with pytest.raises(UserError, match="LongMemEval item without 'answer'"):
        load_rows(str(path), DataConfig())


def test_synthetic_dialogues_are_seeded_and_grounded():
    cfg = MultiSessionSynthConfig(n_train=20, sessions=4, update_rate=0.5)
    a, b = synth_multisession(cfg, "train", 1), synth_multisession(cfg, "train", 1)
    assert a == b and a != synth_multisession(cfg, "train", 2)
    assert {r["question_type"] for r in a} == {"single-session-user", "knowledge-update"}
    for row in a:
        (evidence,) = gold_turns(row)
        sid, j = evidence.split(":")
        turn = next(s for s in row["sessions"] if s["id"] == sid)["turns"][int(j)]
        assert row["answers"][0] in turn["text"]
        if row["question_type"] == "knowledge-update":
            assert sid == row["sessions"][-1]["id"]
    held_out = synth_multisession(MultiSessionSynthConfig(n_eval=20), "eval", 1)
    def people(rows):
        return {t["speaker"] for r in rows for s in r["sessions"] for t in s["turns"]} - {"Assistant"}

    assert people(held_out) and people(a) and not people(held_out) & people(a)
    with pytest.raises(UserError, match=r"unknown key 'data.synth.n_sessions' \(did you mean 'data.synth.sessions'"):
        build_dataclass(MultiSessionSynthConfig, {"n_sessions": 3}, "data.synth")


def test_registered_sets_load_and_missing_files_say_where(tmp_path, monkeypatch):
    rows = load_rows("rmm_synth_eval", DataConfig(synth={"n_eval": 3}))
    assert len(rows) == 3 and all("sessions" in r for r in rows)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="longmemeval_s_cleaned.json"):
        load_rows("longmemeval_s_test", DataConfig())


def test_rmm_rewards():
    completions = ["[1, 2]", "oops", "[0]"]
    assert rmm_format_reward(None, completions, rmm_rerank_ok=[True, False, True]) == [1.0, 0.0, 1.0]
    assert rmm_format_reward(None, completions) == [None, None, None]
    answers = [["Miso"], ["Miso"], ["Miso"]]
    replies = ["\\boxed{Miso} [0]", "\\boxed{Mochi} [0]", "\\boxed{miso} [0, 1, 2]"]
    assert rmm_accuracy_reward(None, completions, rmm_answer=replies, answers=answers) == [1.0, 0.0, 1.0]
    cited = rmm_citation_reward(None, completions, rmm_answer=replies, rmm_cited=[1, 1, 9], answers=answers)
    assert cited == [0.125, 0.0, 1.0]  # only when correct, capped at 1


def test_locomo_question_rows_become_sessions_with_evidence():
    from memfactory_cli.envs.dialogue import MultiSessionEnv

    env = MultiSessionEnv(DataConfig(train="synth_dialogue_train", synth={}))
    rows = env.rows("train")
    assert rows and all(r["sessions"] for r in rows)
    with_gold = [r for r in rows if gold_turns(r)]
    assert with_gold, "LoCoMo evidence ids must mark has_answer turns"
    row = with_gold[0]
    assert row["question_type"].startswith("category ")
    texts = [t["text"] for s in row["sessions"] for t in s["turns"] if t["has_answer"]]
    assert texts
