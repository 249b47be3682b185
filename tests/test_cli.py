"""The command line as a user meets it: help, listing, one-line errors with exit code 2, a real training run."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, tiny_overrides


def memfactory(*args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "memfactory_cli", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


def assert_one_line_error(result, match):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert match in lines[0], lines[0]


def test_help_does_not_import_the_stack():
    code = "import sys; from memfactory_cli import cli; print(int('torch' in sys.modules or 'trl' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "0"
    assert memfactory("--help").returncode == 0


def test_a_typo_in_a_train_recipe_is_refused_before_the_trainer_stack_is_imported(tmp_path):
    # train used to import TRL's GRPOConfig (transformers' Trainer, peft) before it could report a typo'd name
    code = (
        "import sys\n"
        "from memfactory_cli.errors import UserError\n"
        "from memfactory_cli.workflows import train\n"
        "try:\n"
        f"    train.run('recipes/memagent_tiny_cpu.yaml', ['agent.name=memagnet', 'output.dir={tmp_path}'])\n"
        "except UserError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m in ('trl.trainer', 'transformers.trainer_utils', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert "unknown agent 'memagnet'" in out and out.strip().splitlines()[-1] == "[]", out


def test_list_shows_every_family():
    out = memfactory("list").stdout
    for name in ("recurrent_memory", "extractor", "retriever", "memagent", "longcontext", "exact_match", "synth_train", "smollm2-135m-instruct"):
        assert name in out


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "nope.yaml"], "recipe not found"),
        (["train", "recipes/memagent_tiny_cpu.yaml", "trainer.max_step=2"], "did you mean 'trainer.max_steps'"),
        (["train", "recipes/memagent_tiny_cpu.yaml", "agent.name=memagnet"], "unknown agent 'memagnet'"),
        (["train", "recipes/memagent_tiny_cpu.yaml", "rewards=[{name: bogus}]"], "unknown reward 'bogus'"),
        (["train", "recipes/memagent_tiny_cpu.yaml", "data.train=missing.json"], "data file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, match, tmp_path):
    assert_one_line_error(memfactory(*args, f"output.dir={tmp_path}"), match)


@pytest.mark.parametrize("recipe", ["memagent_qwen3_1.7b.yaml", "memagent_qwen3_4b_instruct.yaml"])
def test_gpu_recipe_on_a_cpu_machine_fails_fast(recipe, tmp_path):
    result = memfactory("train", f"recipes/{recipe}", f"output.dir={tmp_path}", timeout=60)
    assert_one_line_error(result, "needs a CUDA GPU")


def test_gpu_recipe_without_the_hub_fails_fast(tmp_path):
    result = memfactory("train", "recipes/memagent_qwen3_1.7b.yaml", "trainer.device=cpu", f"output.dir={tmp_path}", timeout=60)
    assert_one_line_error(result, "not in the local Hugging Face cache")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = memfactory("train", "recipes/memagent_tiny_cpu.yaml", f"output.dir={blocker}/run")
    assert_one_line_error(result, "not writable")


def test_tiny_recipe_trains_through_the_cli(tmp_path):
    """The real Qwen3 tokenizer recipe, end to end: two steps, config saved, final/ written."""
    out = tmp_path / "run"
    result = memfactory("train", "recipes/memagent_tiny_cpu.yaml", "logging.swanlab=offline", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "config.yaml").exists() and (out / "final" / "config.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "swanlog").is_dir()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traces = [p.read_text() for p in (out / "swanlog").rglob("media/text/*.txt")]  # SwanLab's offline dashboard text
    assert len(traces) == 2 * 2 and all("--- chunk 1/" in t and "--- memory after chunk 1/" in t for t in traces)


def test_infer_prints_memory_after_each_chunk(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("Ada Reed lives in Oslo. " * 20)
    args = ["infer", "--doc", str(doc), "--question", "Where does Ada Reed live?"]
    result = memfactory(*args, *tiny_overrides(tmp_path / "x"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "memory after chunk 1/" in result.stdout and "answer" in result.stdout


def test_data_synth_command(tmp_path):
    result = memfactory("data", "synth", "--out", str(tmp_path), "--n-train", "3", "--n-eval", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "train.json").exists() and (tmp_path / "eval.json").exists()
