"""Sharded training on 2 CPU processes: FSDP2 (``fully_shard`` over gloo, through accelerate's FSDP2 plugin).

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
SHIM = ROOT / "tests" / "fsdp2_on_cpu.py"
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
            "launch.config_file": "fsdp2",
            "launch.main_process_port": str(_free_port()),
            **extra,
        },
    )


def run_fsdp2(args: list[str], timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """The launcher's own ``accelerate launch`` command, with the FSDP-on-CPU shim as the launched script."""
    cfg = load_recipe(RECIPE, [a for a in args if not a.startswith("--")])
    command = launch.launch_command(cfg, RECIPE, args)
    at = command.index("--module")
    command[at : at + 2] = [str(SHIM)]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
        out, err = proc.communicate()
        pytest.fail(f"2-process FSDP2 run hung past {timeout}s (collective mismatch?): {err[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_fsdp2_with_kl_on_documents_of_different_lengths_completes(tmp_path):
    out = tmp_path / "run"
    result = run_fsdp2(overrides(out, documents(tmp_path / "docs.json")))
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "launch.json").read_text())
    assert info["distributed_type"] == "FSDP" and info["backend"] == "gloo", info
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(r["rows"] == 2 * 2 + 2 * 4 for r in lines), "short doc: 1 memory row + answer; long: 3 + answer"
    assert all("kl" in r for r in lines) and lines[0]["grad_norm"] > 0
    assert (out / "final" / "model.safetensors").exists()
