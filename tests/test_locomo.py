"""The LoCoMo converter on a small fixture written to the published schema, and the synthetic dialogues."""

from __future__ import annotations

from pathlib import Path

import pytest

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import locomo
from memfactory_cli.data.sources import load_rows
from memfactory_cli.envs.memory_bank import MemoryBankEnv
from memfactory_cli.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "locomo_mini.json"


@pytest.fixture()
def cfg():
    return DataConfig(train="locomo_train", eval="locomo_test", locomo_path=str(FIXTURE))


def test_convert_orders_turns_drops_adversarial_and_casts_answers():
    (conv, jon, _) = locomo.convert(locomo.read_locomo(FIXTURE))
    assert conv["id"] == "conv-26" and conv["speakers"] == ["Caroline", "Melanie"]
    assert [t["dia_id"] for t in conv["turns"]] == ["D1:1", "D1:2", "D1:3", "D2:1", "D2:2"]
    assert conv["turns"][3]["timestamp"] == "1:14 pm on 25 May, 2023" and conv["turns"][3]["session"] == 2
    assert conv["turns"][1]["text"].endswith("[shares a painting of a sunrise over a lake]")
    assert [q["category"] for q in conv["qa"]] == [4, 2, 1, 3]  # category 5 dropped
    assert conv["qa"][1]["answers"] == ["2022"]  # int -> str
    assert jon["qa"][0]["evidence"] == ["D1:1", "D1:2"]  # "D1:1; D1:2" read leniently


def test_split_by_conversation(cfg):
    train, test = load_rows("locomo_train", cfg), load_rows("locomo_test", cfg)
    assert {r["meta"]["conversation"] for r in train} == {"conv-26"}
    assert {r["meta"]["conversation"] for r in load_rows("locomo_val", cfg)} == {"conv-30"}
    assert {r["meta"]["conversation"] for r in test} == {"conv-41"}
    row = train[1]
    assert row["question"] == "When did Caroline move to Boston?" and row["answers"] == ["2022"]
    assert row["meta"]["kind"] == "question" and row["meta"]["turn_index"] == 5 and row["meta"]["category"] == 2


def test_turn_rows_link_questions_to_their_last_evidence(cfg):
    rows = load_rows("locomo_turns_train", cfg)
    by_turn = {r["meta"]["turn_index"]: [q["question"] for q in r["meta"]["qa"]] for r in rows}
    # D1:3 -> 2, D2:2 -> 4, D1:2 + D2:1 -> 3; the question without evidence has no turn
    assert by_turn == {
        2: ["What did Caroline research?"],
        3: ["What did Melanie paint and when did she run a race?"],
        4: ["When did Caroline move to Boston?"],
    }
    assert all(r["meta"]["kind"] == "turn" for r in rows)
    assert rows[0]["meta"]["turns"] is rows[1]["meta"]["turns"]  # one conversation held once


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="LoCoMo file not found.*data.locomo_path"):
        load_rows("locomo_test", DataConfig(locomo_path=str(tmp_path / "nope.json")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(UserError, match="list of conversations"):
        load_rows("locomo_test", DataConfig(locomo_path=str(bad)))


def test_env_rows_and_a_trl_dataset(cfg):
    env = MemoryBankEnv(cfg)
    rows = env.rows("train")
    ds = env.train_dataset(rows)
    assert len(ds) == 4 and ds[0]["meta"]["turns"][0]["speaker"] == "Caroline"
    assert env.score("in 2022", ["2022"], ("em", "f1", "bleu1")) == pytest.approx({"em": 0.0, "f1": 2 / 3, "bleu1": 0.5})
    with pytest.raises(UserError, match="not a conversational memory row"):
        MemoryBankEnv(DataConfig(train="synth_train", synth={"n_train": 2})).rows("train")


def test_synthetic_dialogues_are_seeded_linked_and_disjoint():
    cfg = DataConfig(synth={"n_train": 3, "n_eval": 2})
    a, b = load_rows("synth_dialogue_train", cfg), load_rows("synth_dialogue_train", cfg)
    assert a == b
    held_out = load_rows("synth_dialogue_eval", cfg)
    names = lambda rows: {s for r in rows for s in r["meta"]["speakers"]}  # noqa: E731
    assert not names(a) & names(held_out)
    for row in a:
        turns = {t["dia_id"]: t for t in row["meta"]["turns"]}
        (qa,) = row["meta"]["qa"]
        last = turns[qa["evidence"][-1]]
        assert qa["answers"][0] in last["text"]  # the last evidence turn states the (latest) answer
        assert last["speaker"] in qa["question"]
    assert {r["meta"]["category"] for r in a} <= {1, 4}
    turn_rows = load_rows("synth_dialogue_turns_train", cfg)
    assert sum(len(r["meta"]["qa"]) for r in turn_rows) == len(a)
    with pytest.raises(UserError, match="unknown key 'data.synth.people'"):
        load_rows("synth_dialogue_train", DataConfig(synth={"people": 3}))


def test_evidence_ids_with_a_leading_zero_or_a_stray_colon_resolve():
    """LoCoMo writes 'D30:05' for turn D30:5 and 'D:11:26' for D11:26 (3 ids in locomo10.json; reviews M12)."""
    raw = [{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1": [{"speaker": "A", "dia_id": "D1:5", "text": "x"}]},
            "qa": [{"question": "q", "answer": "a", "category": 4, "evidence": ["D1:05", "D:1:5"]}]}]
    (conv,) = locomo.convert(raw)
    assert conv["qa"][0]["evidence"] == ["D1:5", "D1:5"]
