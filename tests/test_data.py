import json

import pytest

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import synth
from memfactory_cli.data.sources import load_rows
from memfactory_cli.errors import UserError


def test_three_input_schemas_normalise_to_one(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": "Q1?"}], "context": "doc one", "reward_model": {"ground_truth": ["a"]}},
        {"context": "doc two", "input": "Q2?", "answers": ["b", "c"]},
        {"context": "w w w", "input": "Q3?", "outputs": ["x", "y", "z"], "answer_prefix": "Answer:"},
    ]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows))
    out = load_rows(str(path), DataConfig())
    assert [r["question"] for r in out] == ["Q1?", "Q2?", "Q3?"]
    assert [r["answers"] for r in out] == [["a"], ["b", "c"], ["x", "y", "z"]]
    assert out[2]["answer_prefix"] == "Answer:"


def test_parquet_and_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": [{"role": "user", "content": "Q?"}], "context": "d", "reward_model": {"ground_truth": ["a"]}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("t.parquet", "t.jsonl"):
        assert load_rows(str(tmp_path / name), DataConfig())[0]["answers"] == ["a"]


@pytest.mark.parametrize(
    "content,match",
    [
        ('[{"input": "Q?", "answers": ["a"]}]', "row 0: missing field 'context'"),
        ('[{"context": "d", "answers": ["a"]}]', "missing field 'input'"),
        ('[{"context": "d", "input": "Q?"}]', "missing field 'answers'"),
        ('[{"context": "d", "input": "Q?", "answers": []}]', "non-empty list"),
        ("[1, 2", "line 1: invalid JSON"),
        ("", "empty"),
    ],
)
def test_bad_rows_are_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        load_rows(str(path), DataConfig())


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[{"context": "caf\xe9"}]')
    with pytest.raises(UserError, match="not a UTF-8"):
        load_rows(str(path), DataConfig())


def test_offline_hub_id_says_where_to_put_the_file(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="hub is offline.*local .json/.parquet"):
        load_rows("BytedTsinghua-SIA/hotpotqa", DataConfig())


def test_synth_is_seeded_and_splits_use_disjoint_names():
    cfg = synth.SynthConfig(n_train=20, n_eval=10, multi_hop_fraction=0.5)
    assert synth.generate(cfg, "train", 1) == synth.generate(cfg, "train", 1)
    assert synth.generate(cfg, "train", 1) != synth.generate(cfg, "train", 2)
    eval_words = {w.strip("?.") for r in synth.generate(cfg, "eval", 1) for w in r["context"].split()}
    train_words = {w.strip("?.") for r in synth.generate(cfg, "train", 1) for w in r["context"].split()}
    assert eval_words & set(synth.HELD_OUT_FIRST) and not eval_words & set(synth.TRAIN_FIRST)
    assert train_words & set(synth.TRAIN_FIRST) and not train_words & set(synth.HELD_OUT_FIRST)


def test_synth_answer_is_in_the_document_with_distractors():
    cfg = synth.SynthConfig(n_train=30, people=4)
    for item in synth.generate(cfg, "train", 0):
        answer = item["reward_model"]["ground_truth"][0]
        assert answer in item["context"]
        values, _, _ = synth.RELATIONS[item["extra_info"]["relation"]]
        assert sum(v in item["context"].split() or f"{v}." in item["context"].split() for v in values) >= 4


def test_synth_single_relation_states_each_fact_once():
    cfg = synth.SynthConfig(n_train=30, people=2, relations=("city",))
    for item in synth.generate(cfg, "train", 0):
        facts = [s for s in item["context"].split(". ") if " lives in " in s]
        people = [f.split(" lives in ")[0] for f in facts]
        assert len(facts) == 2 and len(set(people)) == 2


def test_synth_cli_writes_both_schemas(tmp_path):
    from memfactory_cli.workflows.data import synth_to_files

    paths = synth_to_files(str(tmp_path), 0, {"n_train": 5, "n_eval": 3})
    assert len(load_rows(str(paths["train"]), DataConfig())) == 5
    assert set(json.loads(paths["eval"].read_text())[0]) >= {"context", "input", "answers"}
