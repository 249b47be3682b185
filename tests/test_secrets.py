"""API keys are read from the environment only and never written: a planted key is looked for in every file a
train and an eval run leave (config.yaml, metrics.jsonl, rollouts, SwanLab's offline log, summary.json, the
judge cache) and in the console output."""

from pathlib import Path

from memfactory_cli.rewards.judge.loopback import LoopbackJudge
from tests.conftest import run_cli, tiny_overrides

KEYS = {
    "OPENAI_API_KEY": "sk-planted-openai-0f9e8d7c",
    "SWANLAB_API_KEY": "planted-swanlab-1a2b3c4d",
    "MF_TEST_JUDGE_KEY": "sk-planted-judge-5e6f7a8b",
}


def files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_planted_keys_appear_in_no_output(tmp_path, monkeypatch, capsys):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with LoopbackJudge() as server:
        judge = (
            f"{{base_url: '{server.base_url}', model: judge, api_key_env: MF_TEST_JUDGE_KEY, "
            f"cache_dir: '{tmp_path / 'judge-cache'}', require_boxed: false}}"
        )
        run = tmp_path / "run"
        overrides = tiny_overrides(run, **{"logging.swanlab": "offline", "eval.judge": judge})
        rewards = f"rewards=[{{name: format}}, {{name: llm_judge, args: {judge}}}]"
        assert run_cli("train", "recipes/memagent_tiny_cpu.yaml", *overrides, rewards) == 0
        assert run_cli("eval", "--set", "synth_eval", "--limit", "2", "--out", str(tmp_path / "eval"), *overrides) == 0
        assert server.requests > 2
        assert {h["Authorization"] for h in server.headers} == {f"Bearer {KEYS['MF_TEST_JUDGE_KEY']}"}
    console = capsys.readouterr()
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "rollouts.jsonl", "summary.json", "results.jsonl"} <= written
    assert files_containing(run / "swanlog", "MF_TEST_JUDGE_KEY"), "SwanLab recorded the recipe, so it is searched"
    assert (tmp_path / "judge-cache" / "verdicts.sqlite").exists()
    assert "MF_TEST_JUDGE_KEY" in (run / "config.yaml").read_text(), "the recipe names the variable, not the key"
    for name, value in KEYS.items():
        assert files_containing(tmp_path, value) == [], name
        assert value not in console.out and value not in console.err, name
