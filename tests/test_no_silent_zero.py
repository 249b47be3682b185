"""Every path where a metric could read 0 because of plumbing (a judge that never ran, missing gold, missing
citations, an empty bank, an undefined rate, an empty aggregate) gives ``None`` instead, and the count is reported.

One test per path; each one failed on the code before the fix (see the report of issue 17).
"""

from __future__ import annotations

from memfactory_cli.agents.base import Episode
from memfactory_cli.config import load_recipe
from tests.test_memory_r1 import RECIPE, Scripted, _conversation

REPLY = "- 9 May 2023: Alice: My home city is Lisbon\n**Answer:** Lisbon"


def _question_row():
    row = _conversation()
    row["meta"] = {**row["meta"], "kind": "question", "turn_index": 3}
    return row


def _memory_r1_eval(tokenizer, tmp_path, judge_args: str):
    from memfactory_cli.workflows.common import build_agent, build_env
    from memfactory_cli.workflows.eval_sets import ResultsLog, evaluate_set

    cfg = load_recipe(RECIPE, ["agent.modules.retriever.name=bm25", f"eval.judge={judge_args}"])
    agent, env = build_agent(cfg, tokenizer), build_env(cfg)

    from memfactory_cli.generation.base import SamplingParams

    class Policy(Scripted):
        sampling = SamplingParams(do_sample=False)

    log = ResultsLog(tmp_path / "results.jsonl")
    entry = evaluate_set(log, "s", "m", [_question_row()], agent, env, Policy(tokenizer, [REPLY]), cfg, 1, progress=lambda *a: None)
    return entry, log.select("s", "m")


def test_the_judge_judges_memory_r1s_parsed_answer(tokenizer, tmp_path):
    """Memory-R1's answer is the text after **Answer:**, never boxed: it reaches the judge as it is (it used to get
    0.0 without a call, because the judge required a \\boxed{} answer)."""
    from memfactory_cli.rewards.judge.loopback import LoopbackJudge

    with LoopbackJudge() as judge:
        entry, (row,) = _memory_r1_eval(tokenizer, tmp_path, f"{{backend: openai, base_url: '{judge.base_url}', model: j, cache: false}}")
        assert judge.requests == 1
    assert row["answer"] == "Lisbon" and row["scores"]["judge"] == 1.0
    assert entry["metrics"]["judge"]["mean"] == 1.0


def test_judge_failures_are_none_and_counted_in_the_summary(tokenizer, tmp_path):
    from memfactory_cli.rewards.judge.loopback import LoopbackJudge

    with LoopbackJudge(script=lambda p, a: "500") as judge:
        args = f"{{backend: openai, base_url: '{judge.base_url}', model: j, cache: false, max_retries: 0}}"
        entry, (row,) = _memory_r1_eval(tokenizer, tmp_path, args)
    assert row["scores"]["judge"] is None
    assert "judge" not in entry["metrics"] and entry["unscored"]["judge"] == 1


# -- missing gold ---------------------------------------------------------------------------------------------------
def test_a_question_without_a_gold_answer_is_unscored_not_zero():
    from memfactory_cli.envs.dialogue import MultiSessionEnv
    from memfactory_cli.envs.memory_bank import MemoryBankEnv
    from memfactory_cli.rewards.memory_r1 import answer_scores

    assert answer_scores("Lisbon", [""]) == {"em": None, "f1": None, "bleu1": None}
    assert MemoryBankEnv.score("Lisbon", [" "], ("em", "f1")) == {"em": None, "f1": None}
    assert MultiSessionEnv.score("\\boxed{Lisbon}", [""], ("em", "f1")) == {"em": None, "f1": None}
    assert answer_scores(None, ["Lisbon"])["em"] == 0.0  # no answer at all is the model's failure: a real 0


def test_a_manager_state_whose_questions_lack_gold_has_no_outcome(tokenizer):
    from tests.test_memory_r1 import Reader, Role, _agent

    agent = _agent(tokenizer)
    agent.set_frozen(Role(tokenizer, Reader(tokenizer)))
    row = _conversation()
    row["meta"] = {**row["meta"], "qa": [{**row["meta"]["qa"][0], "answers": [""]}]}
    (traj,) = agent.rollout([Episode(row, [], [])], Scripted(tokenizer, ['{"memory": [{"event": "NONE"}]}']))
    assert traj.extras["mr1_outcome"] is None


# -- undefined rates ------------------------------------------------------------------------------------------------
def test_operation_rates_are_absent_when_no_plan_had_an_operation(tokenizer):
    from tests.test_memory_r1 import Reader, Role, _agent

    agent = _agent(tokenizer)
    agent.set_frozen(Role(tokenizer, Reader(tokenizer)))
    trajs = agent.rollout([Episode(_conversation(), [], [])], Scripted(tokenizer, ['{"memory": []}']))
    metrics = agent.rollout_metrics(trajs)
    assert metrics["ops/per_turn"] == 0.0 and "ops/add_rate" not in metrics and metrics["ops/invalid_rate"] == 0.0


# -- RMM: missing citations, empty banks, no learning signal --------------------------------------------------------
def _rmm(tokenizer, **options):
    from memfactory_cli.agents.rmm import RMMAgent, RMMConfig

    return RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, "linear", RMMConfig(memory="turn", **options))


class _Uncited:
    """Answers without any citation group."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, max_new_tokens):
        return [self.tokenizer("\\boxed{Miso}", add_special_tokens=False)["input_ids"] for _ in prompts]


def test_a_reply_without_citations_gives_no_citation_reward_and_no_learning_figures(tokenizer):
    from memfactory_cli.rewards.rmm import rmm_citation_reward
    from tests.test_rmm_agent import ROW

    agent = _rmm(tokenizer)
    (traj,) = agent.rollout(agent.episodes([ROW]), _Uncited(tokenizer))
    assert traj.cited is None and traj.extras["rmm_cited"] is None
    assert rmm_citation_reward(None, ["x"], rmm_answer=[traj.answer], rmm_cited=[traj.extras["rmm_cited"]], answers=[["Miso"]]) == [None]
    learned = agent.learn([traj])
    assert learned["reranker/updates"] == 0.0 and learned["reranker/skipped"] == 1.0
    assert "reranker/loss" not in learned and "reranker/reward" not in learned


def test_recall_over_an_empty_bank_is_unscored_and_counted(tokenizer):
    from memfactory_cli.agents.rmm import RMMAgent, RMMConfig
    from tests.test_rmm_agent import ROW

    class NoTrait(_Uncited):  # prospective reflection finds nothing to store
        def generate(self, prompts, max_new_tokens):
            return [self.tokenizer("NO_TRAIT", add_special_tokens=False)["input_ids"] for _ in prompts]

    agent = RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, "linear", RMMConfig(memory="reflection"))
    (traj,) = agent.rollout(agent.episodes([ROW]), NoTrait(tokenizer))
    assert traj.bank == [] and set(traj.scores.values()) == {None} and traj.stats["bank/empty"] == 1.0


def test_a_paired_delta_without_pairs_is_none():
    from memfactory_cli.workflows.evaluate import before_after, paired_delta

    assert paired_delta([{"em": 1.0}], [{"em": 0.0}], "recall@k") is None
    before = {"n": 1, "metrics": {"recall@k": {"mean": 1.0, "stderr": 0.0}}, "per_question": [{"recall@k": 1.0}], "unscored": {}}
    after = {"n": 1, "metrics": {"recall@k": {"mean": 0.0, "stderr": 0.0}}, "per_question": [{}], "unscored": {"recall@k": 1}}
    summary = before_after(before, after, 0.0)
    assert "recall@k" not in summary["delta"] and summary["unscored"]["after"] == {"recall@k": 1}


def test_the_eval_summary_counts_unscored_rows():
    from memfactory_cli.workflows.evaluate import evaluate_rows

    class Agent:
        def episodes(self, rows):
            return [Episode(r, [], []) for r in rows]

        def rollout(self, episodes, generator):
            from memfactory_cli.agents.base import Trajectory, Turn

            return [Trajectory(e, [Turn("answer", [], [], True, text="Lisbon")]) for e in episodes]

    from memfactory_cli.envs.memory_bank import MemoryBankEnv

    rows = [{"id": "a", "question": "q", "answers": ["Lisbon"]}, {"id": "b", "question": "q", "answers": [""]}]
    out = evaluate_rows(Agent(), MemoryBankEnv(None), rows, None)
    assert out["metrics"]["em"]["mean"] == 1.0 and {k: out["unscored"][k] for k in ("em", "f1", "bleu1")} == {"em": 1, "f1": 1, "bleu1": 1}


def test_rewards_and_the_judge_give_none_without_gold():
    from memfactory_cli.rewards.judge import judge_texts
    from memfactory_cli.rewards.judge.loopback import LoopbackJudge
    from memfactory_cli.rewards.memory_r1 import answer_scores, memory_r1_outcome

    assert memory_r1_outcome(None, ["x"], mr1_outcome=[answer_scores("Lisbon", [""])], metric="f1") == [None]
    with LoopbackJudge() as judge:
        scores, _, _ = judge_texts(["\\boxed{Lisbon}"], [[" "]], ["q"], base_url=judge.base_url, model="j", cache=False)
        assert scores == [None] and judge.requests == 0


def test_a_training_judge_that_requires_boxed_answers_is_refused_for_memory_r1(tmp_path):
    """Training rewards see Memory-R1's raw replies, which are never boxed: a judge reward requiring ``\\boxed{}``
    would score every one 0 without a call. ``check`` refuses that recipe and names the fix."""
    from memfactory_cli.workflows.check import run_checks

    judge = "{name: llm_judge, weight: 1.0, args: {backend: hf, model: tiny-qwen3-bpe%s}}"
    base = ["agent.modules.retriever.name=bm25", f"output.dir={tmp_path / 'run'}"]
    report = run_checks(load_recipe(RECIPE, [*base, "rewards=[" + judge % "" + "]"]), "train", strict=False)
    assert [p for p in report.problems if "require_boxed=false" in p], report.problems
    report = run_checks(load_recipe(RECIPE, [*base, "rewards=[" + judge % ", require_boxed: false" + "]"]), "train", strict=False)
    assert not [p for p in report.problems if "require_boxed" in p], report.problems
