"""LLM-as-Judge against real HTTP servers on 127.0.0.1: strict parsing, every reference, retries, errors, cache."""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from memfactory_cli.config.schema import RewardSpec
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry
from memfactory_cli.rewards.base import build_reward_funcs
from memfactory_cli.rewards.judge import Judge, JudgeConfig
from memfactory_cli.rewards.judge.cache import VerdictCache, cache_key
from memfactory_cli.rewards.judge.loopback import LoopbackJudge
from memfactory_cli.rewards.judge.templates import parse_binary, parse_correct_wrong, parse_labels
from tests.conftest import ROOT, tiny_overrides


class Metrics:
    def __init__(self):
        self.values = {}

    def __call__(self, name, value):
        self.values[name] = value


def reward(server, **args):
    """The registered reward bound to its YAML args, the way a recipe builds it."""
    options = {"base_url": server.base_url, "model": "judge", "cache": False, "backoff_s": 0.01, **args}
    funcs, _ = build_reward_funcs([RewardSpec(name="llm_judge", args=options)])
    return funcs[0]


def boxed(*answers):
    return [f"So the answer is \\boxed{{{a}}}." for a in answers]


def plan(steps):
    """A fault script: the listed actions for a prediction's successive attempts, then its last one for ever."""
    return lambda prediction, attempt: steps.get(prediction, ["ok"])[min(attempt, len(steps.get(prediction, ["ok"])) - 1)]


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("True", True),
        (" false.\n", False),
        ("**True**", True),
        ("<think>it could be False</think>\nTrue", True),
        ("Not True", None),
        ("True or False", None),
        ("The answer is True", None),
        ("", None),
    ],
)
def test_binary_parsing_is_an_exact_label(text, verdict):
    assert parse_binary(text) is verdict


@pytest.mark.parametrize(
    "text,verdict",
    [
        ('Both name the same city.\n{"label": "CORRECT"}', True),
        ('Different person.\n```json\n{"label": "WRONG"}\n```', False),
        ('Not CORRECT at all. {"label": "WRONG"}', False),
        ('{"label": "correct"}', None),
        ('{"label": "NOT CORRECT"}', None),
        ("CORRECT", None),
        ('{"label": "CORRECT"} or maybe {"label": "WRONG"}', None),
        ('{"reason": "no label"}', None),
    ],
)
def test_correct_wrong_parsing_needs_one_json_label(text, verdict):
    assert parse_correct_wrong(text) is verdict


@pytest.mark.parametrize(
    "text,verdicts",
    [
        ('One each.\n{"labels": ["CORRECT", "WRONG", "CORRECT"]}', [True, False, True]),
        ('{"labels": ["CORRECT", "maybe", "WRONG"]}', [True, None, False]),
        ('{"labels": ["CORRECT", "WRONG"]}', [None, None, None]),
        ('{"labels": ["CORRECT", "WRONG", "WRONG"]} {"labels": ["WRONG", "WRONG", "WRONG"]}', [None, None, None]),
        ('{"label": "CORRECT"}', [None, None, None]),
    ],
)
def test_groupwise_parsing_needs_one_aligned_list(text, verdicts):
    assert parse_labels(text, 3) == verdicts


def test_groupwise_judges_a_question_s_answers_in_one_call():
    metrics = Metrics()
    down = "Oslo | Bergen | Paris"
    with LoopbackJudge(plan({down: ["500"]})) as server:
        func = reward(server, template="correct_wrong_group", max_retries=1)
        completions = boxed("Oslo", "Bergen", "Oslo", "Oslo", "Oslo", "Bergen", "Paris", "Oslo")
        answers = [["Oslo"]] * 4 + [["Paris", "Oslo"]] * 4
        questions = ["Where does Ada live?"] * 4 + ["Where does Bo live?"] * 4
        scores = func(None, completions, answers=answers, question=questions, log_metric=metrics)
        first = next(b["messages"][-1]["content"] for b in server.bodies if "Ada" in b["messages"][-1]["content"])
        assert server.attempts == {"Oslo | Bergen": 1, down: 2}
    assert scores == [1.0, 0.0, 1.0, 1.0, None, None, None, None]
    assert "1. Oslo\n2. Bergen\n" in first and "3." not in first
    assert metrics.values["judge/errors"] == 4 and metrics.values["judge/error_rate"] == 0.5


@pytest.mark.parametrize("template", ["binary", "correct_wrong"])
def test_the_judge_sees_every_reference(template):
    with LoopbackJudge() as server:
        func = reward(server, template=template)
        scores = func(None, boxed("Paris", "Rome"), answers=[["London", "Paris"]] * 2, question=["Capital?"] * 2)
        prompt = server.bodies[0]["messages"][-1]["content"]
    assert scores == [1.0, 0.0], "'Paris' matches the second reference, which answers[0]-only judging would miss"
    assert "- London\n- Paris\n" in prompt and "Capital?" in prompt


def test_match_all_requires_every_reference():
    with LoopbackJudge() as server:
        func = reward(server, match="all")
        scores = func(None, boxed("Paris", "Paris and London"), answers=[["London", "Paris"]] * 2, question=["q", "q"])
    assert scores == [0.0, 1.0]


def test_reward_scores_boxed_answers_and_skips_the_call_otherwise():
    metrics = Metrics()
    with LoopbackJudge() as server:
        func = reward(server)
        completions = [*boxed("Oslo", "Bergen"), "Oslo, no box", [{"role": "assistant", "content": "\\boxed{Oslo}"}], "\\boxed{Oslo}"]
        answers = [["oslo"], ["oslo"], ["oslo"], ["oslo"], []]
        scores = func(None, completions, answers=answers, question=["Where?"] * 5, log_metric=metrics)
        assert server.requests == 2, "no box, no references and a repeated prediction must not cost a call"
    assert scores == [1.0, 0.0, 0.0, 1.0, None]
    assert metrics.values["judge/errors"] == 0 and metrics.values["judge/error_rate"] == 0.0


def test_faults_are_retried_counted_and_never_scored_zero():
    script = plan({
        "a": ["500", "ok"],
        "b": ["garbage", "ok"],
        "c": ["sleep", "ok"],
        "d": ["drop", "ok"],
        "e": ["nochoices", "500", "ok"],
        "f": ["500"],
    })
    metrics = Metrics()
    with LoopbackJudge(script, sleep_s=1.0) as server:
        func = reward(server, timeout_s=0.3, max_retries=2)
        preds = ["a", "b", "c", "d", "e", "f"]
        scores = func(None, boxed(*preds), answers=[[p] for p in preds], question=["q"] * 6, log_metric=metrics)
        attempts = dict(server.attempts)
    assert scores == [1.0, 1.0, 1.0, 1.0, 1.0, None]
    assert attempts == {"a": 2, "b": 2, "c": 2, "d": 2, "e": 3, "f": 3}
    assert metrics.values["judge/errors"] == 1
    assert metrics.values["judge/error_rate"] == pytest.approx(1 / 6)


def test_unparseable_replies_are_errors_without_retry():
    script = plan({"x": ["reply:Not True"], "y": ["reply:True or False"], "z": ["reply:True"]})
    with LoopbackJudge(script) as server:
        judge = Judge(JudgeConfig(base_url=server.base_url, model="judge", cache=False, backoff_s=0.01))
        report = judge.judge(["q"] * 3, [["x"], ["y"], ["z"]], ["x", "y", "z"])
        assert server.requests == 3
    assert report.verdicts == [None, None, True]
    assert report.errors == 2 and report.failures["unparsed reply"] == 2


def test_cache_hits_make_no_call_and_failures_are_not_cached(tmp_path):
    script = plan({"down": ["500"]})
    config = JudgeConfig(model="judge", cache_dir=str(tmp_path), max_retries=0, backoff_s=0.01)
    questions, refs, preds = ["q1", "q2", "q3"], [["a"], ["b"], ["c"]], ["a", "x", "down"]
    with LoopbackJudge(script) as server:
        first = Judge(replace(config, base_url=server.base_url)).judge(questions, refs, preds)
        assert server.requests == 3
        second = Judge(replace(config, base_url=server.base_url)).judge(questions, refs, preds)
        assert server.requests == 4, "two cached verdicts, and the failure asked again"
    assert first.verdicts == second.verdicts == [True, False, None]
    assert second.cache_hits == 2 and second.calls == 1


def test_cache_is_safe_across_processes(tmp_path):
    path = tmp_path / "shared" / "verdicts.sqlite"
    writer = textwrap.dedent(f"""
        import sys
        from memfactory_cli.rewards.judge.cache import VerdictCache
        cache = VerdictCache({str(path)!r})
        for i in range(150):
            cache.put_many([(f"{{sys.argv[1]}}-{{i}}", i % 2 == 0, "r")])
        print(len(cache.get_many([f"{{sys.argv[1]}}-{{i}}" for i in range(150)])))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, name], cwd=ROOT, stdout=subprocess.PIPE, text=True) for name in "ab"]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == ["150", "150"]
    cache = VerdictCache(path)
    assert len(cache) == 300
    assert cache.get_many(["a-0", "b-1"]) == {"a-0": True, "b-1": False}


def test_cache_key_covers_every_input():
    base = ("openai:judge", "binary/v1/any", "q", ["a", "b"], "p")
    keys = {cache_key(*base)}
    for i, changed in enumerate(["openai:other", "correct_wrong/v1/any", "q2", ["a"], "p2"]):
        keys.add(cache_key(*base[:i], changed, *base[i + 1 :]))
    keys.add(cache_key("openai:judge", "binary/v1/any", "q", ["a, b"], "p"))
    assert len(keys) == 7


def test_concurrency_is_bounded_and_used():
    preds = [f"p{i}" for i in range(9)]
    for concurrency, expected in [(1, 1), (3, 3)]:
        with LoopbackJudge(delay_s=0.1) as server:
            judge = Judge(JudgeConfig(base_url=server.base_url, model="judge", concurrency=concurrency, cache=False))
            judge.judge(["q"] * 9, [["x"]] * 9, preds)
            assert server.max_in_flight == expected


def test_api_key_comes_from_the_named_variable_and_is_never_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-loopback-secret")
    with LoopbackJudge() as server:
        func = reward(server, api_key_env="JUDGE_TEST_KEY", cache=True, cache_dir=str(tmp_path))
        assert func(None, boxed("a"), answers=[["a"]], question=["q"]) == [1.0]
        assert server.headers[0]["Authorization"] == "Bearer sk-loopback-secret"
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-loopback-secret" not in stored and stored


def test_rejected_key_stops_with_one_line():
    with LoopbackJudge(plan({"a": ["401"]})) as server:
        func = reward(server)
        with pytest.raises(UserError, match="HTTP 401"):
            func(None, boxed("a"), answers=[["a"]], question=["q"])


@pytest.mark.parametrize(
    "args,match",
    [
        ({"template": "binray"}, "unknown template 'binray' \\(did you mean 'binary'\\?\\)"),
        ({"backend": "opnai"}, "unknown backend 'opnai'"),
        ({"match": "some"}, "match must be one of any, all"),
        ({"api_key_env": "JUDGE_TEST_UNSET_KEY"}, "JUDGE_TEST_UNSET_KEY \\(api_key_env\\) is not set"),
        ({"base_url": None}, "needs base_url"),
    ],
)
def test_bad_configuration_is_a_user_error(args, match, monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_UNSET_KEY", raising=False)
    func = registry("reward").get("llm_judge")
    options = {"base_url": "http://127.0.0.1:9/v1", "model": "judge", "cache": False, **args}
    with pytest.raises(UserError, match=match):
        func(None, boxed("a"), answers=[["a"]], question=["q"], **options)


def test_unknown_reward_arg_is_rejected_at_build():
    with pytest.raises(UserError, match="takes no such argument"):
        build_reward_funcs([RewardSpec(name="llm_judge", args={"temprature": 0.0})])


def test_hf_backend_judges_a_batch_in_process_and_gibberish_is_no_verdict(bpe_model_dir, monkeypatch):
    from memfactory_cli.generation.base import HFGenerator

    calls = []
    original = HFGenerator.generate

    def spy(self, prompts, max_new_tokens):
        calls.append(len(prompts))
        return original(self, prompts, max_new_tokens)

    monkeypatch.setattr(HFGenerator, "generate", spy)
    judge = Judge(JudgeConfig(backend="hf", model=str(bpe_model_dir), device="cpu", dtype="float32", cache=False))
    report = judge.judge(["q"] * 3, [["a"], ["b"], ["c"]], ["x", "y", "z"])
    assert calls == [3]
    assert report.verdicts == [None, None, None] and report.errors == 3, "a random model's reply is not a verdict"


def test_two_step_training_logs_judge_error_rate(tmp_path):
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows import train

    with LoopbackJudge(lambda prediction, attempt: "500") as server:
        args = f"{{base_url: '{server.base_url}', model: judge, cache: false, max_retries: 1, backoff_s: 0.01, require_boxed: false}}"
        rewards = f"[{{name: format, weight: 0.1}}, {{name: llm_judge, weight: 1.0, args: {args}}}]"
        out = tmp_path / "run"
        run = train.build(load_recipe(None, tiny_overrides(out, **{"trainer.max_steps": "2", "rewards": rewards})))
        run.trainer.train()
        requests = server.requests
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert requests > 0 and requests % 2 == 0, "every judged answer is asked twice (one retry)"
    for line in lines:
        assert line["judge/error_rate"] == 1.0 and line["judge/errors"] >= 1
        assert line["rewards/llm_judge/mean"] is None, "a judge outage must not become a reward of 0"


def test_a_tiny_model_behind_serve_is_judged_over_http_and_gibberish_is_no_verdict(model, tokenizer):
    from memfactory_cli.agents.memagent import MemAgent
    from memfactory_cli.generation.base import SamplingParams
    from memfactory_cli.workflows.serve import ServerThread, Service, create_app

    modules = {"memory": {"name": "recurrent_memory", "chunk_size": 32, "max_memory_tokens": 6, "max_answer_tokens": 8}}
    service = Service("tiny", "model", model, tokenizer, MemAgent(tokenizer, modules), SamplingParams(do_sample=False))
    with ServerThread(create_app(service)) as base_url:
        judge = Judge(JudgeConfig(base_url=base_url, model="tiny", cache=False, max_tokens=8, backoff_s=0.01))
        report = judge.judge(["Where does Ada live?"] * 2, [["Oslo"], ["Oslo"]], ["Oslo", "Rome"])
        wrong_name = Judge(JudgeConfig(base_url=base_url, model="not-served", cache=False))
        with pytest.raises(UserError, match="HTTP 404"):
            wrong_name.judge(["q"], [["a"]], ["a"])
    assert report.calls == report.requests == 2, "a well-formed reply is final, even when it is not a label"
    assert report.verdicts == [None, None] and report.failures == {"unparsed reply": 2}


# -- LongMemEval's QA accuracy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,verdict", [("yes", True), ("No.", False), ("Yes", True), ("no, not yes", None), ("maybe", None)])
def test_yes_no_parsing_is_an_exact_label(text, verdict):
    from memfactory_cli.rewards.judge.templates import parse_yes_no

    assert parse_yes_no(text) is verdict


def test_longmemeval_template_asks_each_question_type_its_own_prompt():
    """The prompts are LongMemEval's get_anscheck_prompt, by question type; abstention rows get the
    unanswerable-question prompt; verdicts go through the same judge (None on failure, never 0)."""
    from memfactory_cli.rewards.judge import judge_texts

    with LoopbackJudge(plan({"Kyoto": ["500"]})) as server:
        scores, report, _ = judge_texts(
            ["\\boxed{18 days}", "\\boxed{Osaka now}", "\\boxed{not mentioned}", "\\boxed{Kyoto}"],
            [["18 days"], ["Osaka"], ["You did not mention this information."], ["Kyoto"]],
            ["How many days?", "Where do I live?", "What is my dog's name?", "Where did I go?"],
            tasks=["temporal-reasoning", "knowledge-update", "abstention", "multi-session"],
            base_url=server.base_url, model="judge", template="longmemeval", cache=False, max_retries=0,
        )
        prompts = {b["messages"][-1]["content"].split("\n\nQuestion: ")[1].split("\n")[0]: b for b in server.bodies}
    assert scores == [1.0, 1.0, 0.0, None] and report.errors == 1
    assert "off-by-one errors" in prompts["How many days?"]["messages"][0]["content"]
    assert "updated answer" in prompts["Where do I live?"]["messages"][0]["content"]
    assert "unanswerable question" in prompts["What is my dog's name?"]["messages"][0]["content"]
    assert all(len(b["messages"]) == 1 and b["max_tokens"] == 10 for b in prompts.values())


def test_the_task_is_part_of_the_cache_key(tmp_path):
    from memfactory_cli.rewards.judge import judge_texts

    with LoopbackJudge() as server:
        args = dict(base_url=server.base_url, model="judge", template="longmemeval", cache_dir=str(tmp_path))
        for task in ("temporal-reasoning", "knowledge-update", "temporal-reasoning"):
            judge_texts(["\\boxed{x}"], [["x"]], ["q?"], tasks=[task], **args)
        assert server.requests == 2
