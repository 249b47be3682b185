"""Sharded training on 2 CPU processes: FSDP2 (``fully_shard`` over gloo, through accelerate's FSDP2 plugin), and
DeepSpeed ZeRO-3 over gloo where ``deepspeed`` is installed (slow: about 3 minutes on a loaded 2-core machine).

Under FSDP2 every forward all-gathers each layer's parameters from all ranks, so every rank must run the same
number of forwards: the two documents here have 1 and 3 chunks, and the sampler gives each rank one question (G=2),
so one rank has 2 memory rows and the other 6 in every step.
"""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from memfactory_cli.config import load_recipe
from memfactory_cli.workflows import launch
from tests.conftest import ROOT, tiny_overrides
from tests.test_launch import _free_port

RECIPE = "recipes/memagent_tiny_cpu.yaml"
SHIM = ROOT / "tests" / "sharded_on_cpu.py"
TIMEOUT = 240  # a collective mismatch hangs: the run is killed and the test fails

SHORT = "Alice keeps the red key in the kitchen drawer."
LONG = " ".join(
    f"Report {i}: the weather in town {i} was mild, the market sold {i} baskets of apples and pears that day."
    for i in range(12)
) + " Bob keeps the blue key under the garden stone."


def documents(path: Path) -> Path:
    rows = [
        {"context": SHORT, "input": "Where does Alice keep the red key?", "answers": ["kitchen drawer"]},
        {"context": LONG, "input": "Where does Bob keep the blue key?", "answers": ["garden stone"]},
    ]
    path.write_text(json.dumps(rows))
    return path


def overrides(out: Path, data: Path, **extra: str) -> list[str]:
    return tiny_overrides(
        out,
        **{
            "data.train": str(data),
            "trainer.max_steps": "2",
            "trainer.beta": "0.04",
            "rewards": "[{name: 'tests.helpers:length_reward'}]",
            "launch.num_processes": "2",
            "launch.main_process_port": str(_free_port()),
            **extra,
        },
    )


def run_sharded(
    args: list[str], resume: str | None = None, timeout: int = TIMEOUT, **env: str
) -> subprocess.CompletedProcess:
    """The launcher's own ``accelerate launch`` command, with the sharded-on-CPU shim as the launched script."""
    command = launch.launch_command(load_recipe(RECIPE, args), RECIPE, args, resume=resume)
    at = command.index("--module")
    command[at : at + 2] = [str(SHIM)]
    env = {**{k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}, **env}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
        out, err = proc.communicate()
        pytest.fail(f"2-process sharded run hung past {timeout}s (collective mismatch?): {err[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _trains_two_steps_in_lock_step(tmp_path, config_file: str, distributed_type: str, timeout: int = TIMEOUT) -> None:
    out = tmp_path / "run"
    args = overrides(out, documents(tmp_path / "docs.json"), **{"launch.config_file": config_file})
    result = run_sharded(args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "launch.json").read_text())
    assert info["distributed_type"] == distributed_type and info["backend"] == "gloo", info
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(r["rows"] == 2 * 2 + 2 * 4 for r in lines), "short doc: 1 memory row + answer; long: 3 + answer"
    assert all("kl" in r for r in lines) and lines[0]["grad_norm"] > 0
    assert (out / "final" / "model.safetensors").exists()


def test_fsdp2_with_kl_on_documents_of_different_lengths_completes(tmp_path):
    _trains_two_steps_in_lock_step(tmp_path, "fsdp2", "FSDP")


def zero3_sharding_every_parameter(tmp_path: Path) -> Path:
    """The shipped zero3.yaml with ``stage3_param_persistence_threshold: 0``: DeepSpeed keeps parameters under 100k
    elements whole on every rank, which is all of the tiny model's, so its forwards would gather nothing."""
    import yaml

    ds = {
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        **dict.fromkeys(("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"), "auto"),
        "bf16": {"enabled": "auto"},
    }
    (tmp_path / "ds_config.json").write_text(json.dumps(ds))
    config = yaml.safe_load(launch.accelerate_config("zero3").read_text())
    del config["mixed_precision"]  # accelerate refuses it beside a deepspeed_config_file
    config["deepspeed_config"] = {
        "deepspeed_config_file": str(tmp_path / "ds_config.json"),
        "deepspeed_multinode_launcher": "standard",
        "zero3_init_flag": True,
    }
    path = tmp_path / "zero3_all_sharded.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_zero3_with_kl_on_documents_of_different_lengths_completes(tmp_path):
    pytest.importorskip("deepspeed")
    config = zero3_sharding_every_parameter(tmp_path)
    _trains_two_steps_in_lock_step(tmp_path, str(config), "DEEPSPEED", timeout=600)


def _killed_run_resumes_to_the_same_weights(tmp_path: Path, config_file: str, layout: str, timeout: int) -> Path:
    """As tests/test_resume.py, with the sharded checkpoint files: two optimizer steps share one generation, and the
    resume at step 2 starts an epoch. Returns the resumed run's checkpoint-2 for layout checks."""
    from memfactory_cli.trainer.checkpoints import latest_checkpoint, optimizer_layout
    from tests.test_resume import max_abs_diff, steps

    data = documents(tmp_path / "docs.json")
    extra = {
        "launch.config_file": config_file,
        "trainer.max_steps": "4",
        "trainer.save_steps": "2",
        "trainer.num_iterations": "2",
        "trainer.learning_rate": "1e-2",
        "output.keep_last": "1",
    }
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert run_sharded(overrides(reference, data, **extra), timeout=timeout).returncode == 0

    killed = run_sharded(overrides(out, data, **extra), timeout=timeout, MF_TEST_KILL_BEFORE_RENAME="checkpoint-4")
    assert killed.returncode != 0 and steps(out) == [1, 2, 3, 4]
    assert optimizer_layout(out / ".checkpoint-4.tmp" / "checkpoint-4") == layout, "written, not yet renamed"
    assert latest_checkpoint(out) == out / "checkpoint-2" and optimizer_layout(out / "checkpoint-2") == layout
    assert sorted(p.name for p in (out / "checkpoint-2").glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    kept = sorted(p.name for p in (out / "checkpoint-2").iterdir())

    resumed = run_sharded(overrides(out, data, **extra), resume="auto", timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(out) == [1, 2, 3, 4]
    diff = max_abs_diff(reference / "final", out / "final")
    assert diff <= 1e-6, diff
    return kept


def test_killed_fsdp2_run_resumes_from_its_sharded_checkpoint_to_the_same_weights(tmp_path):
    files = _killed_run_resumes_to_the_same_weights(tmp_path, "fsdp2", "fsdp", TIMEOUT)
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= set(files), files


@pytest.mark.slow
def test_killed_zero3_run_resumes_from_its_deepspeed_checkpoint_to_the_same_weights(tmp_path):
    pytest.importorskip("deepspeed")
    config = zero3_sharding_every_parameter(tmp_path)
    files = _killed_run_resumes_to_the_same_weights(tmp_path, str(config), "deepspeed", 600)
    assert {"latest", "global_step2"} <= set(files), files
