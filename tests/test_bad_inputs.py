"""The bad-input catalogue: every case is one line on stderr naming the file/key, exit code 2, no traceback, and
nothing written (the folder the case lives in is byte-for-byte unchanged).

Cases run the CLI in this process (``run_cli``); one runs as a real subprocess to show the same for a fresh
interpreter, warnings and all.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memfactory_cli.rewards.judge.loopback import LoopbackJudge
from tests.conftest import ROOT, run_cli, tiny_overrides

RECIPE = "recipes/memagent_tiny_cpu.yaml"
DOWN = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def train(tmp: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["train", RECIPE, *tiny_overrides(out or tmp / "run"), *extra]


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def recipe_file(tmp: Path, content: str | bytes) -> list[str]:
    return ["train", str(write(tmp, "recipe.yaml", content)), *tiny_overrides(tmp / "run")]


def data_file(tmp: Path, name: str, content: str | bytes) -> list[str]:
    return train(tmp, f"data.train={write(tmp, name, content)}")


def judge_reward(base_url: str, **args: str) -> str:
    options = {"base_url": f"'{base_url}'", "model": "judge", "timeout_s": "0.3", "max_retries": "0", "backoff_s": "0.01", **args}
    return "rewards=[{name: llm_judge, args: {" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}}]"


ROW = {"context": "Ada lives in Oslo.", "input": "Where does Ada live?", "answers": ["Oslo"]}


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _checkpoint_dir(tmp: Path) -> Path:
    """A folder named like a checkpoint that is not one (only an empty trainer_state.json)."""
    path = tmp / "run" / "checkpoint-2"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    return path


Case = Callable[[Path], list[str]]
CASES: dict[str, tuple[Case, list[str]]] = {
    # recipe files and overrides
    "malformed-yaml": (lambda t: recipe_file(t, "model:\n  name_or_path: [unclosed\n"), ["recipe.yaml: line", "malformed YAML"]),
    "unknown-key-in-file": (lambda t: recipe_file(t, "trainer:\n  max_step: 2\n"), ["recipe.yaml", "'trainer.max_step'", "did you mean 'trainer.max_steps'"]),
    "unknown-section": (lambda t: recipe_file(t, "traner: {}\n"), ["unknown key 'traner'", "did you mean 'trainer'"]),
    "unknown-key-override": (lambda t: train(t, "agent.modules.memory.chunk_sz=5"), ["'agent.modules.memory.chunk_sz'", "did you mean 'agent.modules.memory.chunk_size'"]),
    "wrong-type-override": (lambda t: train(t, "trainer.max_steps=many"), ["trainer.max_steps", "many"]),
    "wrong-type-in-file": (lambda t: recipe_file(t, "trainer:\n  learning_rate: [1, 2]\n"), ["recipe.yaml", "trainer.learning_rate"]),
    "missing-recipe": (lambda t: ["train", str(t / "nope.yaml")], ["recipe not found", "nope.yaml"]),
    "empty-recipe": (lambda t: recipe_file(t, ""), ["recipe.yaml", "the recipe is empty"]),
    "recipe-not-a-mapping": (lambda t: recipe_file(t, "- a\n- b\n"), ["recipe.yaml", "must be a mapping"]),
    "recipe-not-utf8": (lambda t: recipe_file(t, b"model:\n  name_or_path: \xff\xfe\n"), ["recipe.yaml", "not a UTF-8 text file"]),
    "override-without-equals": (lambda t: train(t, "trainer.max_steps"), ["override 'trainer.max_steps'", "section.key=value"]),
    # data
    "data-file-missing": (lambda t: train(t, f"data.train={t / 'missing.json'}"), ["data file not found", "missing.json"]),
    "data-file-empty": (lambda t: data_file(t, "train.json", ""), ["train.json", "the file is empty"]),
    "data-row-missing-field": (
        lambda t: data_file(t, "train.jsonl", json.dumps(ROW) + "\n" + json.dumps({"input": "q?", "answers": ["a"]}) + "\n"),
        ["train.jsonl: row 1", "missing field 'context'"],
    ),
    "data-row-empty-answers": (lambda t: data_file(t, "train.jsonl", json.dumps({**ROW, "answers": []}) + "\n"), ["train.jsonl: row 0", "reference answers"]),
    "data-not-utf8": (lambda t: data_file(t, "train.jsonl", b'{"context": "\xff"}\n'), ["train.jsonl", "not a UTF-8 text file"]),
    "data-bad-json-line": (lambda t: data_file(t, "train.jsonl", json.dumps(ROW) + "\n{oops\n"), ["train.jsonl: line 2", "invalid JSON"]),
    "data-unknown-set": (lambda t: train(t, "data.train=synth_trian"), ["dataset 'synth_trian'", "not a registered name"]),
    # names
    "unknown-agent": (lambda t: train(t, "agent.name=memagnet"), ["unknown agent 'memagnet'", "did you mean 'memagent'"]),
    "unknown-module": (lambda t: train(t, "agent.modules.memory.name=recurent_memory"), ["unknown recurrent_memory 'recurent_memory'", "did you mean"]),
    "unknown-module-slot": (lambda t: train(t, "agent.modules.retriever={name: bm25}"), ["agent.modules.retriever", "no such slot"]),
    "unknown-reward": (lambda t: train(t, "rewards=[{name: exact_macth}]"), ["rewards[0]", "unknown reward 'exact_macth'", "did you mean 'exact_match'"]),
    "dotted-path-no-module": (lambda t: train(t, "rewards=[{name: 'nosuch.module:f'}]"), ["rewards[0]", "cannot import reward 'nosuch.module:f'"]),
    "dotted-path-no-attribute": (lambda t: train(t, "rewards=[{name: 'tests.helpers:nosuch'}]"), ["rewards[0]", "has no attribute 'nosuch'"]),
    "unknown-reward-arg": (lambda t: train(t, "rewards=[{name: f1, args: {normalise: true}}]"), ["rewards[0].args.normalise", "no such argument"]),
    "unknown-env": (lambda t: train(t, "env.name=longcontxt"), ["unknown env 'longcontxt'", "did you mean 'longcontext'"]),
    "unknown-model": (lambda t: train(t, "model.name_or_path=tiny-qwen4"), ["model 'tiny-qwen4'", "neither a local folder"]),
    "model-folder-without-config": (lambda t: train(t, f"model.name_or_path={_folder(t / 'model')}"), ["model", "has no config.json"]),
    # sizes and arithmetic
    "zero-chunk": (lambda t: train(t, "agent.modules.memory.chunk_size=0"), ["agent.modules.memory.chunk_size must be positive"]),
    "negative-memory": (lambda t: train(t, "agent.modules.memory.max_memory_tokens=-8"), ["max_memory_tokens must be positive"]),
    "zero-steps": (lambda t: train(t, "trainer.max_steps=0"), ["trainer.max_steps must be positive"]),
    "negative-questions": (lambda t: train(t, "trainer.questions_per_step=-1"), ["trainer.questions_per_step must be positive"]),
    "group-of-one": (lambda t: train(t, "trainer.num_generations=1"), ["num_generations must be >= 2"]),
    "uneven-split": (lambda t: train(t, "trainer.questions_per_step=3", "trainer.gradient_accumulation_steps=4"), ["= 6 trajectories", "split evenly"]),
    "chunk-larger-than-context": (lambda t: train(t, "agent.modules.memory.chunk_size=40000"), ["agent.modules.memory", "40000", "context is 32768"]),
    "save-inside-a-generation": (lambda t: train(t, "trainer.save_steps=3", "trainer.num_iterations=2"), ["trainer.save_steps=3", "multiple of trainer.num_iterations"]),
    "negative-keep-last": (lambda t: train(t, "output.keep_last=-1"), ["output.keep_last must be >= 0"]),
    "unknown-loss": (lambda t: train(t, "trainer.loss_type=ppo"), ["trainer.loss_type: Invalid value 'ppo', expected one of", "'dapo'", "help: TRL loss aggregation"]),
    "bad-bf16": (lambda t: train(t, "trainer.bf16=maybe"), ["trainer.bf16: Invalid value 'maybe', expected one of ['auto', True, False]"]),
    "cuda-on-cpu": (lambda t: train(t, "trainer.device=cuda"), ["needs a CUDA GPU", "trainer.device=cpu"]),
    "swanlab-cloud-without-key": (lambda t: train(t, "logging.swanlab=cloud"), ["SWANLAB_API_KEY"]),
    # the judge, probed before training
    "judge-down": (lambda t: train(t, judge_reward(DOWN)), ["rewards[0] (llm_judge)", "gave no verdict", "connection"]),
    "judge-key-missing": (lambda t: train(t, judge_reward(DOWN, api_key_env="MF_TEST_UNSET_KEY")), ["MF_TEST_UNSET_KEY (api_key_env) is not set"]),
    "eval-judge-down": (
        lambda t: ["eval", "--set", "synth_eval", "--out", str(t / "out"), *tiny_overrides(t / "run"), f"eval.judge={{base_url: '{DOWN}', model: judge, max_retries: 0}}"],
        ["eval.judge", "gave no verdict"],
    ),
    # output folders and checkpoints
    "unwritable-output-dir": (lambda t: train(t, out=write(t, "file", "x") / "run"), ["output.dir", "not writable", "is a file"]),
    "resume-from-a-non-checkpoint": (lambda t: [*train(t), "--resume", str(_checkpoint_dir(t))], ["--resume", "not a complete checkpoint", "optimizer.pt"]),
    "resume-from-nowhere": (lambda t: [*train(t), "--resume", str(t / "checkpoint-9")], ["--resume", "does not exist"]),
    "fresh-run-over-checkpoints": (lambda t: [_checkpoint_dir(t), *train(t)][1:], ["already holds checkpoints", "--resume auto"]),
    # other commands
    "eval-unknown-set": (lambda t: ["eval", "--set", "evl_50", "--out", str(t / "out"), *tiny_overrides(t / "run")], ["dataset 'evl_50'"]),
    "infer-missing-doc": (lambda t: ["infer", "--doc", str(t / "doc.txt"), "--question", "q?", *tiny_overrides(t / "run")], ["doc.txt"]),
}


def assert_clean_failure(code: int, stderr: str, needles: list[str]) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("memfactory: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_the_catalogue_is_large_enough():
    assert len(CASES) + len(JUDGE_FAULTS) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    monkeypatch.delenv("MF_TEST_UNSET_KEY", raising=False)
    make, needles = CASES[name]
    args = make(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = run_cli(*args)
    assert_clean_failure(code, capsys.readouterr().err, needles)
    assert snapshot(tmp_path) == before, "nothing may be written"


@contextlib.contextmanager
def judge(action: str) -> Iterator[LoopbackJudge]:
    with LoopbackJudge(lambda prediction, attempt: action, sleep_s=2.0) as server:
        yield server


JUDGE_FAULTS = {
    "judge-timeout": ("sleep", ["gave no verdict", "timeout"]),
    "judge-garbage": ("garbage", ["gave no verdict", "garbage body"]),
    "judge-not-a-completion": ("nochoices", ["gave no verdict", "garbage body"]),
    "judge-unparseable-verdict": ("reply:Maybe", ["gave no verdict", "unparsed reply"]),
    "judge-rejects-the-key": ("401", ["HTTP 401", "api_key_env"]),
}


@pytest.mark.parametrize("name", list(JUDGE_FAULTS))
def test_bad_judge(name, tmp_path, capsys):
    action, needles = JUDGE_FAULTS[name]
    with judge(action) as server:
        args = train(tmp_path, judge_reward(server.base_url))
        capsys.readouterr()
        code = run_cli(*args)
        assert server.requests >= 1
    assert_clean_failure(code, capsys.readouterr().err, ["rewards[0] (llm_judge)", *needles])
    assert not (tmp_path / "run").exists()


def test_a_fresh_interpreter_also_prints_one_line(tmp_path):
    """Warnings and progress bars must not reach stderr before the error either."""
    result = subprocess.run(
        [sys.executable, "-m", "memfactory_cli", *train(tmp_path, "agent.modules.memory.chunk_size=40000")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert_clean_failure(result.returncode, result.stderr, ["context is 32768"])
    assert not (tmp_path / "run").exists()
