"""``memfactory check``: the resolved recipe and estimates on success, every problem at once on failure."""

import pytest

from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.generation.base import Generator
from tests.conftest import ROOT, run_cli, tiny_overrides

RECIPE = "recipes/memagent_tiny_cpu.yaml"


def test_check_prints_the_resolved_recipe_and_estimates_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("check", RECIPE, *tiny_overrides(out)) == 0
    stdout = capsys.readouterr().out
    assert "questions_per_step: 2" in stdout and "name_or_path: tiny-qwen3-bpe" in stdout
    assert "model: tiny-qwen3-bpe (context 32768)" in stdout
    assert "rows per step: about" in stdout and "2 x 2 trajectories" in stdout
    assert stdout.strip().endswith("check ok: no problems found")
    assert not out.exists()


def test_every_problem_is_reported_in_one_pass(tmp_path, capsys):
    bad = [
        "rewards=[{name: exact_macth}, {name: f1, args: {x: 1}}]",
        "agent.modules.memory.chunk_size=40000",
        "trainer.questions_per_step=3",
        "trainer.gradient_accumulation_steps=4",
        f"data.eval={tmp_path / 'missing.json'}",
        "trainer.eval_before_after=true",
    ]
    assert run_cli("check", RECIPE, *tiny_overrides(tmp_path / "run"), *bad) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5, lines
    for needle in ("split evenly", "missing.json", "unknown reward 'exact_macth'", "rewards[1].args.x", "context is 32768"):
        assert sum(needle in line for line in lines) == 1, (needle, lines)

    assert run_cli("train", RECIPE, *tiny_overrides(tmp_path / "run"), *bad) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("memfactory: error: 5 problems: (1) ") and "(5) " in line
    assert not (tmp_path / "run").exists()


def test_every_unknown_key_is_listed(tmp_path, capsys):
    assert run_cli("check", RECIPE, *tiny_overrides(tmp_path / "run"), "trainer.max_step=2", "model.nme=x") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("unknown key" in line for line in lines)
    assert sum("'trainer.max_step'" in line for line in lines) == sum("'model.nme'" in line for line in lines) == 1


def test_train_starts_with_the_check(tmp_path, capsys):
    assert run_cli("train", RECIPE, *tiny_overrides(tmp_path / "run", **{"trainer.max_steps": "1"})) == 0
    assert "check ok: batch 2 questions x 2 = 4 trajectories" in capsys.readouterr().out


@pytest.mark.parametrize("question", [0, 7])
def test_memagent_budget_is_the_longest_real_turn(tokenizer, question):
    """The budget the check computes is exactly the longest prompt + completion the agent can produce."""
    spec = {"name": "recurrent_memory", "chunk_size": 40, "max_memory_tokens": 9, "max_answer_tokens": 5}
    agent = MemAgent(tokenizer, {"memory": spec})
    m = agent.memory
    q, chunk = [5] * question, [7] * 40
    memory = [6] * max(9, len(m.initial_memory))  # the first update turn carries the initial memory, maybe longer
    update_len, answer_len = len(m.update_prompt(q, memory, chunk)) + 9, len(m.final_prompt(q, memory)) + 5
    assert answer_len < update_len
    update, answer = agent.check_budget(1, question_tokens=question)  # a 1-token context: both turns too long
    assert f"an update turn needs {update_len} tokens" in update and f"answer turn needs {answer_len} tokens" in answer
    assert agent.check_budget(update_len, question_tokens=question) == []
    (problem,) = agent.check_budget(update_len - 1, question_tokens=question)
    assert problem.startswith("agent.modules.memory: an update turn")


class EOSGenerator(Generator):
    def __init__(self, eos: int):
        self.eos = eos

    def generate(self, prompts, max_new_tokens):
        return [[self.eos] for _ in prompts]


def test_expected_rows_match_a_rollout(tokenizer, tmp_path):
    from memfactory_cli.config import load_recipe
    from memfactory_cli.envs.longcontext import LongcontextEnv

    cfg = load_recipe(RECIPE, tiny_overrides(tmp_path))
    agent = MemAgent.from_config(cfg.agent, tokenizer)
    episodes = agent.episodes(LongcontextEnv(cfg.data).rows("train")[:6])
    trajectories = agent.rollout(episodes, EOSGenerator(tokenizer.eos_token_id))
    assert [agent.expected_rows(e) for e in episodes] == [len(t.turns) for t in trajectories]
    assert len({len(t.turns) for t in trajectories}) > 1 or len(trajectories[0].turns) > 2


def test_allowed_values_come_from_the_schema_with_its_help(tmp_path, capsys):
    # sdpa_additive is a valid attention implementation (check used to reject it with its own stale list)
    assert run_cli("check", RECIPE, *tiny_overrides(tmp_path / "run"), "model.attn_implementation=sdpa_additive") == 0
    capsys.readouterr()
    assert run_cli("check", RECIPE, *tiny_overrides(tmp_path / "run"), "trainer.scale_rewards=std") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "trainer.scale_rewards: Invalid value 'std', expected one of ['group', 'batch', 'none']" in line
    assert "help: Advantage scaling" in line


# -- the batch arithmetic for the world size `train` will launch (M1) -------------------------------------------
SHIPPED = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


def _batch_problems(recipe: str, overrides: list[str]) -> list[str]:
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows.check import CheckReport, _trainer_problems

    report = CheckReport()
    _trainer_problems(report, load_recipe(f"recipes/{recipe}", overrides))
    return [p for p in report.problems if "split evenly" in p]


@pytest.mark.parametrize("recipe", SHIPPED)
@pytest.mark.parametrize("processes", [2, 4, 7, 8])
def test_check_validates_the_launched_world_size_and_names_the_nearest_valid_settings(recipe, processes, monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "NPROC_PER_NODE", "NNODES"):
        monkeypatch.delenv(name, raising=False)  # before launch: only the recipe knows the world size
    from memfactory_cli.config import load_recipe

    launch = [f"launch.num_processes={processes}"]
    t = load_recipe(f"recipes/{recipe}", []).trainer
    splits = (t.questions_per_step * t.num_generations) % (processes * t.gradient_accumulation_steps) == 0
    problems = _batch_problems(recipe, launch)
    assert bool(problems) != splits, problems
    if splits:
        return
    (problem,) = problems
    assert f"over {processes} process(es)" in problem
    suggestions = problem.split("nearest valid: ")[1].split(" or ")
    assert suggestions and all(s.startswith("trainer.") for s in suggestions)
    for setting in suggestions:
        assert _batch_problems(recipe, [*launch, setting]) == [], setting


def test_check_counts_every_node(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    (problem,) = _batch_problems("memagent_qwen3_1.7b.yaml", ["launch.num_processes=8"])
    assert "over 16 process(es)" in problem and "trainer.gradient_accumulation_steps=24" in problem


@pytest.mark.parametrize("config_file", ["zero3", "fsdp2"])
def test_a_sharded_config_on_cpu_processes_is_refused_before_launch(tmp_path, capsys, monkeypatch, config_file):
    """accelerate would silently train plain DDP there (it enables DeepSpeed/FSDP on accelerators only)."""
    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    many = [*tiny_overrides(tmp_path / "run"), "launch.num_processes=2"]
    assert run_cli("check", RECIPE, *many, f"launch.config_file={config_file}") == 2
    assert "shards only on GPUs" in capsys.readouterr().err
    assert run_cli("check", RECIPE, *many, "launch.config_file=ddp") == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")  # a launched process (the sharded CPU tests' shim) is past the check
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows import launch

    assert launch.sharding_problem(load_recipe(RECIPE, [*many, f"launch.config_file={config_file}"]), "cpu") is None
