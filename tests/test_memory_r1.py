"""Memory-R1: the bank, the operation parser, the live outcome reward, retrieval, and 2-step CPU training runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memfactory_cli.agents.base import Episode
from memfactory_cli.agents.memory_r1 import (
    MemoryR1Agent,
    MemoryR1Config,
    Role,
    final_answer,
    frozen_role,
    parse_answer,
)
from memfactory_cli.config import load_recipe
from memfactory_cli.envs.memory_bank import MemoryBank, bank_from_facts
from memfactory_cli.errors import UserError
from memfactory_cli.modules.updater import parse_plan
from memfactory_cli.rewards.memory_r1 import bleu1, memory_r1_format, memory_r1_outcome
from memfactory_cli.workflows.evaluate import summarise_groups
from tests.test_eval import one_thread  # noqa: F401  (fixture: tiny models run fastest on one thread)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "memory_r1_tiny_cpu.yaml"


# -- the bank -------------------------------------------------------------------------------------------------------
def test_bank_operations_return_new_banks():
    empty = MemoryBank()
    one = empty.add("Alice: I live in Paris.", "Alice", "May 1")
    two = one.add("Bob: I keep a parrot.", "Bob", "May 1")
    assert len(empty) == 0 and one.ids == ["0"] and two.ids == ["0", "1"]
    moved = two.update("0", "Alice: I live in Lisbon.", "May 9")
    assert two.get("0").text == "Alice: I live in Paris." and moved.get("0").text == "Alice: I live in Lisbon."
    assert moved.get("0").timestamp == "May 9" and moved.get("0").speaker == "Alice"
    gone = moved.delete("1")
    assert gone.ids == ["0"] and moved.ids == ["0", "1"]
    assert gone.add("x").ids == ["0", "2"]  # ids are never reused
    with pytest.raises(KeyError):
        gone.delete("1")


# -- the operation parser -------------------------------------------------------------------------------------------
def test_valid_plan_parses_and_applies():
    bank = bank_from_facts([("Alice: I live in Paris.", "Alice", "May 1"), ("Bob: I keep a parrot.", "Bob", "May 1")])
    shown = [bank.entries[1], bank.entries[0]]  # the manager sees retrieval order under local ids 0, 1
    reply = """```json
{"memory": [{"id": "1", "event": "UPDATE", "text": "Alice lives in Lisbon"}, {"id": 0, "event": "DELETE"},
            {"event": "ADD", "text": "Alice started painting"}, {"event": "NONE"}]}
```"""
    plan = parse_plan(reply, len(shown))
    assert plan.valid, plan.error
    assert [(o.event, o.index) for o in plan.ops] == [("UPDATE", 1), ("DELETE", 0), ("ADD", None), ("NOOP", None)]
    after = MemoryR1Agent.apply(bank, plan, shown, {"speaker": "Alice", "timestamp": "May 9"})
    assert after.to_list() == [
        {"id": "0", "text": "Alice lives in Lisbon", "speaker": "Alice", "timestamp": "May 9"},
        {"id": "2", "text": "Alice started painting", "speaker": "Alice", "timestamp": "May 9"},
    ]
    assert len(bank) == 2  # the original state is untouched


@pytest.mark.parametrize(
    "reply,why",
    [
        ('{"memory": [{"event": "ADD", "text": "x"}', "not JSON"),
        ("ADD: Alice lives in Lisbon", "not JSON"),
        ('{"ops": []}', '"memory" list'),
        ('[{"event": "ADD", "text": "x"}]', '"memory" list'),
        ('{"memory": ["ADD x"]}', "not an object"),
        ('{"memory": [{"event": "MERGE", "text": "x"}]}', "event must be"),
        ('{"memory": [{"event": 3, "text": "x"}]}', "event must be"),
        ('{"memory": [{"event": "ADD"}]}', "text must be non-empty"),
        ('{"memory": [{"event": "ADD", "text": 42}]}', "text must be non-empty"),
        ('{"memory": [{"event": "UPDATE", "id": "0", "text": ["a"]}]}', "text must be non-empty"),
        ('{"memory": [{"event": "DELETE", "id": "7"}]}', "not an old memory id"),
        ('{"memory": [{"event": "DELETE"}]}', "must be one of the old memory ids"),
        ('{"memory": [{"event": "UPDATE", "id": [0], "text": "x"}]}', "must be one of the old memory ids"),
        ('{"memory": [{"event": "DELETE", "id": true}]}', "must be one of the old memory ids"),
        ('{"memory": [{"event": "DELETE", "id": "m1"}]}', "must be one of the old memory ids"),
        ('{"memory": [{"event": "DELETE", "id": "0"}, {"event": "UPDATE", "id": "0", "text": "y"}]}', "two operations"),
    ],
)
def test_invalid_plans_get_zero_format_reward_and_change_nothing(reply, why):
    plan = parse_plan(reply, 2)
    assert not plan.valid and why in plan.error and plan.ops == []
    assert memory_r1_format(None, [reply], mr1_format=[plan.valid]) == [0.0]
    bank = bank_from_facts([("a", "A", ""), ("b", "B", "")])
    assert MemoryR1Agent.apply(bank, plan, list(bank.entries), {"speaker": "A", "timestamp": ""}) is bank


def test_answer_marker_and_scores():
    assert parse_answer("- 8 May: Alice lives in Lisbon\n**Answer:** Lisbon\n") == "Lisbon"
    assert parse_answer("<think>**Answer:** no</think>relevant...\n**Answer:**  **7 May 2023**") == "7 May 2023"
    assert parse_answer("**Answer**: Lisbon") == "Lisbon"
    assert parse_answer("Lisbon") is None and parse_answer("Answer: Lisbon") is None and parse_answer("**Answer:**  ") is None
    assert final_answer("- memory\n**Answer:** Lisbon") == ("Lisbon", True)
    assert final_answer("Alice lives in Lisbon.\n\n") == ("Alice lives in Lisbon.", False) and final_answer(" ") == (None, False)
    assert bleu1("the red car", ["red car"]) == 1.0 and bleu1("red", ["red car"]) == pytest.approx(0.3679, abs=1e-4)
    assert memory_r1_outcome(None, ["a", "b"], mr1_outcome=[{"em": 1.0, "f1": 1.0}, None], metric="f1") == [1.0, None]
    with pytest.raises(UserError, match="metric must be one of"):
        memory_r1_outcome(None, ["a"], mr1_outcome=[None], metric="judge")


# -- the live outcome reward through the frozen answer agent --------------------------------------------------------
class Scripted:
    """A policy whose i-th completion in each call is the i-th scripted reply (the manager's sampled plans)."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies = tokenizer, replies

    def generate(self, prompts, max_new_tokens):
        return [self.tokenizer(r, add_special_tokens=False)["input_ids"] for r in self.replies[: len(prompts)]]


class Reader:
    """A deterministic stand-in for a capable frozen answer model: it reads the memories in its prompt, keeps the
    one sharing most words with the question, and answers that memory's last word after the marker."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.seen: list[str] = []

    def generate(self, prompts, max_new_tokens):
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            self.seen.append(text)
            question = set(re.findall(r"\w+", text.rsplit("Question:", 1)[1].lower()))
            memories = re.findall(r"^- [^:\n]*: (.+)$", text, flags=re.M)
            best = max(memories, key=lambda m: len(question & set(re.findall(r"\w+", m.lower()))), default="")
            last = (re.findall(r"\w+", best) or ["nothing"])[-1]
            reply = f"{best}\n**Answer:** {last}"
            out.append(self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id])
        return out


def _conversation():
    turns = [
        {"dia_id": "D1:1", "speaker": "Alice", "text": "My home city is Paris", "timestamp": "1 May 2023", "session": 1},
        {"dia_id": "D1:2", "speaker": "Bob", "text": "My pet is a parrot", "timestamp": "1 May 2023", "session": 1},
        {"dia_id": "D2:1", "speaker": "Alice", "text": "My home city is Lisbon", "timestamp": "9 May 2023", "session": 2},
    ]
    qa = [{"question": "What is the home city of Alice?", "answers": ["Lisbon"], "category": 1, "evidence": ["D1:1", "D2:1"]}]
    meta = {"conversation": "c", "speakers": ["Alice", "Bob"], "turns": turns, "turn_index": 2, "kind": "turn", "qa": qa, "category": 1}
    return {"id": "c:t2", "question": qa[0]["question"], "context": "", "answers": ["Lisbon"], "meta": meta}


def _agent(tokenizer, retriever="bm25", **options):
    modules = {"retriever": {"name": retriever}, "updater": {"name": "memory_manager", "top_k": 4}}
    return MemoryR1Agent(tokenizer, modules, "manager", MemoryR1Config(**options))


def test_different_plans_on_one_state_get_different_outcome_rewards(tokenizer):
    agent = _agent(tokenizer)
    reader = Reader(tokenizer)
    agent.set_frozen(Role(tokenizer, reader))
    row = _conversation()
    plans = [
        '{"memory": [{"id": "0", "event": "UPDATE", "text": "Alice: My home city is Lisbon"}]}',  # the right edit
        '{"memory": [{"event": "NONE"}]}',  # keeps the stale Paris memory
        '{"memory": [{"id": "0", "event": "DELETE"}]}',  # forgets Alice's city altogether
        '{"memory": [{"id": "9", "event": "DELETE"}]}',  # invalid: unknown id
    ]
    episodes = [Episode(row, [], []) for _ in plans]
    trajectories = agent.rollout(episodes, Scripted(tokenizer, plans))
    outcome = memory_r1_outcome(None, plans, mr1_outcome=[t.extras["mr1_outcome"] for t in trajectories], metric="em")
    fmt = memory_r1_format(None, plans, mr1_format=[t.extras["mr1_format"] for t in trajectories])
    assert outcome == [1.0, 0.0, 0.0, 0.0] and fmt == [1.0, 1.0, 1.0, 0.0]
    assert trajectories[0].memories == ["[0] Alice: My home city is Lisbon", "[1] Bob: My pet is a parrot"]
    assert trajectories[1].memories[0] == "[0] Alice: My home city is Paris"
    assert [t.extras["mr1_bank_size"] for t in trajectories] == [2, 2, 1, 2]
    # the frozen agent answered from each plan's bank; the NOOP and the invalid plan leave the same bank: asked once
    assert len(reader.seen) == 3 and "Lisbon" in reader.seen[0] and "Lisbon" not in reader.seen[1]
    assert (trajectories[0].turns[0].kind, trajectories[0].turns[0].trainable) == ("memory_ops", True)
    metrics = agent.rollout_metrics(trajectories)
    assert metrics["ops/invalid_rate"] == 0.25 and metrics["ops/add_rate"] == 0.0
    # retention: the turn showed "Lisbon"; only the right edit leaves it in the bank after the operations
    from memfactory_cli.report.retention import retention

    assert trajectories[0].chunks == ["Alice: My home city is Lisbon"]
    assert [retention(t.to_record()).final for t in trajectories] == [True, False, False, False]
    assert metrics["ops/update_rate"] == metrics["ops/delete_rate"] == metrics["ops/noop_rate"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_a_real_frozen_answer_model_rewards_the_plan_that_keeps_the_right_memory():
    """SmolLM2-135M-Instruct as the frozen answer agent: it answers from whichever bank the plan left."""
    role = frozen_role("smollm2-135m-instruct", "cpu", "float32", 16)
    agent = MemoryR1Agent(role.tokenizer, {"retriever": {"name": "bm25"}}, "manager", MemoryR1Config(max_answer_tokens=40))
    agent.set_frozen(role)
    plans = ['{"memory": [{"id": "0", "event": "UPDATE", "text": "Alice: My home city is Lisbon"}]}', '{"memory": []}']
    row = _conversation()
    trajectories = agent.rollout([Episode(row, [], []) for _ in plans], Scripted(role.tokenizer, plans))
    f1 = memory_r1_outcome(None, plans, mr1_outcome=[t.extras["mr1_outcome"] for t in trajectories], metric="f1")
    assert f1[0] > 0 and f1[1] == 0


def test_retrieval_ranks_the_right_memory_first_with_the_offline_embedding_model(tokenizer):
    agent = _agent(tokenizer, retriever="embedding")
    bank = bank_from_facts(
        [
            ("Alice: I adopted a golden retriever puppy last spring.", "Alice", "1 May"),
            ("Bob: I ran a charity marathon in Boston.", "Bob", "1 May"),
            ("Alice: I work as a counselor at a support centre.", "Alice", "2 May"),
            ("Bob: I painted a sunrise over the lake.", "Bob", "3 May"),
        ]
    )
    # the manager is shown the old memory closest to the new fact first (no shared content word but the name)
    assert agent.shown(bank, ["Alice: my dog keeps chewing my shoes"])[0].id == "0"
    prompt, shown = agent.answer_prompt(tokenizer, bank, ["Alice", "Bob"], "Which race did Bob take part in?")
    assert shown[2] == "- 1 May: Bob: I ran a charity marathon in Boston."  # Bob's block: the race first
    assert shown[0].endswith("counselor at a support centre.") or shown[0].endswith("puppy last spring.")
    assert "Memories for user Alice:" in tokenizer.decode(prompt)


def test_options_and_modes_are_validated(tokenizer):
    with pytest.raises(UserError, match="agent.train must be one of manager, answer"):
        MemoryR1Agent(tokenizer, {}, "both", MemoryR1Config())
    with pytest.raises(UserError, match="fixed manager"):
        MemoryR1Agent(tokenizer, {}, "answer", MemoryR1Config(bank_manager="policy"))
    with pytest.raises(UserError, match="no such slot"):
        MemoryR1Agent(tokenizer, {"memory": {"name": "recurrent_memory"}}, "manager", MemoryR1Config())
    with pytest.raises(UserError, match=r"unknown key 'agent.modules.updater.topk'"):
        MemoryR1Agent(tokenizer, {"updater": {"name": "memory_manager", "topk": 3}}, "manager", MemoryR1Config())
    with pytest.raises(UserError, match="unknown key 'agent.options.window'"):
        load_recipe(RECIPE, ["agent.options.window=3"]) and _build_agent(tokenizer, ["agent.options.window=3"])


def _build_agent(tokenizer, overrides):
    from memfactory_cli.workflows.common import build_agent

    return build_agent(load_recipe(RECIPE, overrides), tokenizer)


def test_bank_manager_policy_replays_the_conversation_with_the_rolled_out_model(tokenizer):
    agent = _build_agent(tokenizer, ["agent.options.bank_manager=policy", "agent.modules.retriever.name=bm25"])
    row = _conversation()
    row["meta"] = {**row["meta"], "kind": "question", "turn_index": 3}
    plan = '{"memory": [{"event": "ADD", "text": "remembered"}]}'
    calls = []

    class Policy(Scripted):
        def generate(self, prompts, max_new_tokens):
            calls.append(len(prompts))
            if len(calls) <= 3:  # one manager call per turn, then the answer
                return super().generate(prompts, max_new_tokens)
            return [self.tokenizer("**Answer:** Lisbon", add_special_tokens=False)["input_ids"]] * len(prompts)

    (traj,) = agent.rollout([Episode(row, [], [])], Policy(tokenizer, [plan]))
    assert calls == [1, 1, 1, 1] and traj.extras["mr1_bank_size"] == 3 and traj.answer == "Lisbon"
    assert traj.extras["mr1_outcome"]["em"] == 1.0


# -- eval by category ------------------------------------------------------------------------------------------------
def test_groups_summarise_each_category_by_hand():
    rows = [{"meta": {"category": c}} for c in (4, 1, 4, 2)] + [{"meta": {}}]
    records = [{"q": q, "sample": 0, "scores": {"f1": f}} for q, f in enumerate([1.0, 0.0, 0.5, 0.25, 1.0])]
    groups = summarise_groups(records, rows, ("f1",), 1, "meta.category")
    assert list(groups) == ["1", "2", "4"]
    assert groups["4"]["n"] == 2 and groups["4"]["metrics"]["f1"]["mean"] == 0.75
    assert groups["1"]["metrics"]["f1"]["mean"] == 0.0 and groups["2"]["metrics"]["f1"]["mean"] == 0.25


@pytest.mark.usefixtures("one_thread")
def test_eval_on_locomo_test_reports_f1_bleu1_overall_and_by_category(tmp_path):
    from memfactory_cli.workflows import eval_sets

    fixture = Path(__file__).parent / "fixtures" / "locomo_mini.json"
    overrides = [f"data.locomo_path={fixture}", "data.synth.n_eval=3", *FAST]
    entries = eval_sets.run(["locomo_test", "synth_dialogue_eval"], str(RECIPE), overrides, k=1, out=str(tmp_path), progress=lambda *a: None)
    locomo, synthetic = entries
    assert locomo["n"] == 1 and set(locomo["metrics"]) == {"em", "f1", "bleu1", "locomo_f1", "locomo_bleu1"}
    assert locomo["by_group"]["by"] == "meta.category" and list(locomo["by_group"]["groups"]) == ["4"]
    assert set(synthetic["by_group"]["groups"]) <= {"1", "4"} and sum(g["n"] for g in synthetic["by_group"]["groups"].values()) == synthetic["n"]
    assert "## By group" in (tmp_path / "summary.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 + synthetic["n"] and all(r["memories"] for r in rows)  # the retrieved memories shown


# -- 2-step CPU training runs on the tiny recipe ------------------------------------------------------------------
FAST = ["agent.modules.updater.max_new_tokens=8", "agent.options.max_answer_tokens=6"]


def _train(tmp_path, *overrides):
    from memfactory_cli.workflows import train

    out = tmp_path / "run"
    cfg = load_recipe(RECIPE, [f"output.dir={out}", "logging.swanlab=disabled", "logging.progress=false", *FAST, *overrides])
    run = train.build(cfg)
    run.trainer.train()
    train.save_final(run)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], out


@pytest.mark.usefixtures("one_thread")
def test_two_step_manager_training_on_the_tiny_recipe(tmp_path):
    lines, out = _train(tmp_path)
    assert [r["step"] for r in lines] == [1, 2]
    for key in ("ops/invalid_rate", "ops/per_turn", "memory/bank_size"):
        assert key in lines[0], key
    rates = {"ops/add_rate", "ops/update_rate", "ops/delete_rate", "ops/noop_rate"}
    assert all(rates <= set(r) if r["ops/per_turn"] > 0 else not rates & set(r) for r in lines)  # undefined, not 0
    assert lines[0]["memory/bank_size"] > 0 and "rewards/memory_r1_outcome/mean" in lines[0]
    assert (out / "final" / "config.json").is_file()
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and rollouts[0]["memories"]


@pytest.mark.usefixtures("one_thread")
def test_two_step_answer_training_on_the_tiny_recipe(tmp_path):
    lines, _ = _train(tmp_path, "agent.train=answer", "data.train=synth_dialogue_train")
    assert [r["step"] for r in lines] == [1, 2]
    assert "answer/format_rate" in lines[0] and lines[0]["memory/bank_size"] > 0 and "ops/invalid_rate" not in lines[0]


def test_training_on_the_wrong_row_kind_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="agent.train=answer trains on question rows"):
        _train(tmp_path, "agent.train=answer")


def test_frozen_roles_generate_in_bounded_batches(tokenizer, bpe_model_dir):
    """The frozen answer agent (and extractor, fixed managers) never puts a whole step's prompts in one generate
    call: 40 answer prompts go out as 16 + 16 + 8 (it was one batch of 40; reviews/r1-rmm.md M2)."""
    agent = MemoryR1Agent(tokenizer, {"retriever": {"name": "bm25"}}, "manager", MemoryR1Config(answer_model=str(bpe_model_dir), answer_device="cpu"))
    frozen = agent.role("frozen")
    sizes = []
    frozen.generator._generate_batch = lambda prompts, n: sizes.append(len(prompts)) or [[] for _ in prompts]
    bank = bank_from_facts([("Alice: My home city is Lisbon", "Alice", "9 May")])
    agent.answer(frozen, [(bank, ["Alice", "Bob"], f"Question {i}?") for i in range(40)])
    assert sizes == [16, 16, 8]


def test_an_llm_history_manager_builds_the_bank_once_per_window(tokenizer):
    """history_manager=frozen: the frozen model runs the manager prompt over the window's turns (the paper's
    construction, GPT-4o-mini there) instead of the add_all rule, and the bank of a (conversation, window) is built
    once: the G samples of a state and later rollouts of it reuse it."""
    calls = []

    class FrozenManager(Reader):
        def generate(self, prompts, max_new_tokens):
            texts = [self.tokenizer.decode(p) for p in prompts]
            if all("smart memory manager" in t for t in texts):
                calls.append(len(prompts))
                plan = '{"memory": [{"event": "UPDATE", "id": "0", "text": "Alice: My home city is Paris (managed)"}]}'
                plans = [plan if '{"id": "0", "text"' in t else '{"memory": [{"event": "ADD", "text": "managed"}]}' for t in texts]
                return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in plans]
            return super().generate(prompts, max_new_tokens)

    agent = _agent(tokenizer, history_manager="frozen")
    agent.set_frozen(Role(tokenizer, FrozenManager(tokenizer)))
    row = _conversation()
    noop = '{"memory": [{"event": "NONE"}]}'
    first = agent.rollout([Episode(row, [], []) for _ in range(2)], Scripted(tokenizer, [noop, noop]))
    assert calls == [1, 1]  # turns 0 and 1 of the window, one state (the two samples share it)
    assert first[0].memories == ["[0] Alice: My home city is Paris (managed)"]  # the manager's bank, not add_all's
    agent.rollout([Episode(row, [], [])], Scripted(tokenizer, [noop]))
    assert calls == [1, 1]


def test_a_frozen_extractor_extracts_each_turn_once(tokenizer):
    """Overlapping history windows share turns: the frozen (greedy) extractor is asked once per turn (it was asked
    once per window the turn sits in; reviews/r1-rmm.md M11)."""
    asked = []

    class Extractor(Reader):
        def generate(self, prompts, max_new_tokens):
            texts = [self.tokenizer.decode(p) for p in prompts]
            if all("You extract personal facts" in t for t in texts):
                asked.extend(t.rsplit("Timestamp:", 1)[1].split("<|im_end|>")[0].strip() for t in texts)
                return [self.tokenizer('{"facts": ["a fact"]}', add_special_tokens=False)["input_ids"] for _ in texts]
            return super().generate(prompts, max_new_tokens)

    agent = MemoryR1Agent(tokenizer, {"retriever": {"name": "bm25"}, "extractor": {"name": "llm"}}, "manager", MemoryR1Config())
    agent.set_frozen(Role(tokenizer, Extractor(tokenizer)))
    late, early = _conversation(), _conversation()
    early["id"], early["meta"] = "c:t1", {**early["meta"], "turn_index": 1}
    noop = '{"memory": [{"event": "NONE"}]}'
    agent.rollout([Episode(late, [], []), Episode(early, [], [])], Scripted(tokenizer, [noop, noop]))
    assert len(asked) == 3 and len(set(asked)) == 3  # turns 0, 1, 2 once each (windows [0, 2) and [0, 1) overlap)
